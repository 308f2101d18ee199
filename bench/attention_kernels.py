"""The attention kernel (stages/lib/attention.py) against the three kernels it replaces, on the GPU.

    .venv/bin/python bench/attention_kernels.py propose [--family sdxl] --work-dir build/bench-attention  (here)
    node stages/tune_measure.mjs --work-dir build/bench-attention --repeats 7                           (on the GPU)
    .venv/bin/python bench/attention_kernels.py report [--family sdxl] --work-dir build/bench-attention   (the table)

For each attention shape of a full-size family's UNet (SD 1.5 at 64 x 64 latents, SDXL at 128 x 128; CFG
batch 2), compiles the fused
kernel in several configurations and the plain form as the model built it before (q k^T matmul, softmax,
matmul with v: the same Relax ops through the build's own legalize, fuse and schedule phases, with the UNet's
tuning log applied), into one candidates.wasm that tune_measure.mjs (make tune's measuring step) times in
interleaved rounds on random inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

from candidates import main as command_line, read_measured, write_candidates  # noqa: E402

PREFIX = "bench_attention_"
# Per family: (name, batch * heads, query tokens, key tokens, head width, calls per UNet step) of the self- and
# cross-attentions whose heads the fused kernel takes. SD 1.5 at 64 x 64 latents: 8 heads, 5 transformer blocks
# at each of the 64 x 64 and 32 x 32 levels (the 16 x 16 level's 160-wide heads keep the plain form). SDXL at
# 128 x 128 latents: 64-wide heads, 10 blocks at the 64 x 64 level (10 heads), 60 at 32 x 32 (20 heads).
SHAPES = {
    "sd15": [("self64", 16, 4096, 4096, 40, 5), ("self32", 16, 1024, 1024, 80, 5),
             ("cross64", 16, 4096, 77, 40, 5), ("cross32", 16, 1024, 77, 80, 5)],
    "sdxl": [("self64", 20, 4096, 4096, 64, 10), ("self32", 40, 1024, 1024, 64, 60),
             ("cross64", 20, 4096, 77, 64, 10), ("cross32", 40, 1024, 77, 64, 60)],
}


def configs(d: int):
    from lib.attention import Config

    rows = (1, 2) if d <= 64 else (1,)
    fits = [keys for keys in (8, 16, 32) if 2 * keys * d * 4 <= 16384]  # WebGPU's default workgroup storage
    return ([Config(threads, 1, keys) for threads in (32, 64, 128) for keys in fits] +
            [Config(threads, r, keys, "stream") for threads in (64, 128) for r in rows for keys in fits[:2]])


def plain_kernels(bh, n_q, n_k, d, target, family):
    """The three kernels the model had before FuseAttention, scheduled as the tune stage schedules them."""
    import tvm
    from tvm import relax

    from lib import pipeline

    builder = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((bh, n_q, d), "float32"))
    k_t = relax.Var("k_t", relax.TensorType((bh, d, n_k), "float32"))
    v = relax.Var("v", relax.TensorType((bh, n_k, d), "float32"))
    with builder.function("main", [q, k_t, v]):
        with builder.dataflow():
            scores = builder.emit(relax.op.matmul(q, k_t, out_dtype="float32"))
            probs = builder.emit(relax.op.nn.softmax(scores, axis=-1))
            out = builder.emit_output(relax.op.matmul(probs, v, out_dtype="float32"))
        builder.emit_func_output(out)
    mod = builder.get()
    T = relax.transform
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential([T.LegalizeOps(), T.AnnotateTIROpPattern(), T.FuseOps(), T.FuseTIR(),
                                        T.DeadCodeElimination()])(mod)
    database = ROOT / "artifacts" / "tuning" / family / "unet"
    database = database if database.exists() else None
    mod = pipeline.run_phases(mod, [("schedule", lambda: pipeline.schedule(target, database))], target=target)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def propose(args):
    from lib import attention, tuning
    from lib.targets import target as make_target

    target = make_target("webgpu")
    functions, tasks = {}, []

    def task(name, func, candidates, flops, calls):
        entry = {"task": name, "flops": flops, "calls": calls, "args": tuning.argument_specs(func),
                 "workload": name, "candidates": []}
        for label, kernel in candidates:
            fn = f"k{len(functions)}"
            functions[fn] = kernel.with_attr("global_symbol", fn)
            entry["candidates"].append({"function": fn, "config": label})
        tasks.append(entry)

    for name, bh, n_q, n_k, d, calls in SHAPES[args.family]:
        flops = attention.flops(bh, n_q, n_k, d)
        fused = [(f"{c.mode[0]}{c.threads}x{c.rows}/{c.keys}", attention.kernel(bh, n_q, n_k, d, "float32", "float32", c))
                 for c in configs(d)]
        task(f"{name} fused", fused[0][1], fused, flops, calls)
        for kernel_name, func in plain_kernels(bh, n_q, n_k, d, target, args.family).items():
            task(f"{name} plain {kernel_name}", func, [(None, func)], flops, calls)

    write_candidates(args.work_dir, functions, tasks, PREFIX, args.runtime_dir, target)


def report(args):
    manifest, measured = read_measured(args.work_dir)
    rows, results = [], {}
    for name, bh, n_q, n_k, d, calls in SHAPES[args.family]:
        mine = [t for t in manifest["tasks"] if t["task"].split()[0] == name]
        plain = {t["task"].split()[-1]: measured.get(c["function"], {}).get("ms") for t in mine if "plain" in t["task"]
                 for c in t["candidates"]}
        plain_ms = sum(plain.values()) if plain and None not in plain.values() else None
        fused = [(c["config"], measured.get(c["function"], {})) for t in mine if "fused" in t["task"]
                 for c in t["candidates"]]
        flops = mine[0]["flops"]
        for config, result in sorted(fused, key=lambda cr: cr[1].get("ms", 1e9)):
            ms = result.get("ms")
            rows.append((name, config, ms, result.get("spread"), flops / ms / 1e9 if ms else None, plain_ms,
                         result.get("error")))
        timed = {config: result["ms"] for config, result in fused if "ms" in result}
        best = min(timed, key=timed.get) if timed else None
        results[name] = {"shape": f"{bh} x {n_q} x {n_k}, d {d}", "calls_per_step": calls, "flops": flops,
                         "plain_ms": plain, "plain_total_ms": plain_ms, "fused_ms": timed, "fused_best": best,
                         "fused_best_tflops": round(flops / timed[best] / 1e9, 1) if best else None}
    print(f"{'shape':8} {'config':10} {'fused ms':>9} {'spread':>7} {'TFLOP/s':>8} {'plain ms':>9}  error")
    for name, config, ms, spread, rate, plain_ms, error in rows:
        fmt = lambda x, spec: format(x, spec) if x is not None else "-"  # noqa: E731
        print(f"{name:8} {config:10} {fmt(ms, '9.3f')} {fmt(spread, '7.3f')} {fmt(rate, '8.1f')} "
              f"{fmt(plain_ms, '9.3f')}  {error or ''}")
    if args.json:
        args.json.write_text(json.dumps({"family": args.family, "what": __doc__.split("\n\n")[0], "results": results},
                                        indent=1) + "\n")


if __name__ == "__main__":
    command_line(__doc__, SHAPES, "bench-attention", propose, report)

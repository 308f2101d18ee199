"""The GEMM template (stages/lib/gemm.py) against the schedule the build gives the same matmuls, on the GPU.

    .venv/bin/python bench/gemm_kernels.py propose [--family sdxl] --work-dir build/bench-gemm  (here)
    node stages/tune_measure.mjs --work-dir build/bench-gemm --repeats 7                       (on the GPU)
    .venv/bin/python bench/gemm_kernels.py report [--family sdxl] --work-dir build/bench-gemm   (the table)

For the heaviest linear layers of a full-size family's UNet (SD 1.5 at 64 x 64 latents, SDXL at 128 x 128; CFG
batch 2): x [M, K] times the weight as the build stores it ([K, N], transposed from torch's layout when the
parameters are lifted), plus bias, compiled through the build's legalize, fuse
and schedule phases (the family's UNet tuning log applied where there is one), and the same fused kernel with
the template in several configurations, into one candidates.wasm that tune_measure.mjs times in interleaved
rounds. Correctness is the tests' (tests/python/test_gemm.py) and the whole-model benchmark's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))

from candidates import main as command_line, read_measured, write_candidates  # noqa: E402

PREFIX = "bench_gemm_"
UNCHECKED = ("kernel timings only, not checked against PyTorch in this run: the template's numbers are checked by "
             "tests/python/test_gemm.py (SwiftShader and lavapipe against numpy) and on the GPU by a whole-model run "
             "(bench/gpu_run.sh, against PyTorch)")
# Per family: (name, M, N, K, calls per UNet step). Rows are batch 2 x tokens.
SHAPES = {
    "sd15": [("geglu64", 8192, 2560, 320, 2), ("ffout64", 8192, 320, 1280, 2), ("qkvo64", 8192, 320, 320, 8),
             ("geglu32", 2048, 5120, 640, 2), ("ffout32", 2048, 640, 2560, 2), ("geglu16", 512, 10240, 1280, 2)],
    "sdxl": [("geglu32", 2048, 10240, 1280, 60), ("ffout32", 2048, 1280, 5120, 60), ("qkvo32", 2048, 1280, 1280, 240),
             ("geglu64", 8192, 5120, 640, 10), ("ffout64", 8192, 640, 2560, 10), ("qkvo64", 8192, 640, 640, 40)],
}


def configs():
    from lib.gemm import Config

    return [Config(), Config(k_step=16, virtual_m=2, virtual_n=1), Config(virtual_m=1, virtual_n=2),
            Config(virtual_m=1, virtual_n=1), Config(k_step=4), Config(threads_y=8, k_step=8)]


def linear_kernel(m, n, k):
    """The legalized and fused linear layer with bias, and the name of its matmul kernel (unscheduled; the weight's
    transpose is another kernel, which the build runs once at load time)."""
    import tvm
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    w = relax.Var("w", relax.TensorType((n, k), "float32"))
    b = relax.Var("b", relax.TensorType((n,), "float32"))
    with builder.function("main", [x, w, b]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.linear(x, w, b))
        builder.emit_func_output(out)
    T = relax.transform
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential([T.LegalizeOps(), T.AnnotateTIROpPattern(), T.FuseOps(), T.FuseTIR(),
                                        T.DeadCodeElimination()])(builder.get())
    (name,) = [gv.name_hint for gv, f in mod.functions_items() if "matmul" in gv.name_hint]
    return mod, name


def propose(args):
    from lib import gemm, pipeline, tuning
    from lib.targets import target as make_target

    target = make_target("webgpu")
    database = ROOT / "artifacts" / "tuning" / args.family / "unet"
    database = database if database.exists() else None
    functions, tasks = {}, []
    for name, m, n, k, calls in SHAPES[args.family]:
        mod, kernel_name = linear_kernel(m, n, k)
        func = mod[kernel_name]
        built = pipeline.run_phases(mod, [("schedule", lambda: pipeline.schedule(target, database))], target=target)
        scheduled = built[kernel_name]
        candidates = [("build", scheduled)]
        for config in configs():
            sch = gemm.schedule(func, config)
            if sch is not None and config.workgroup_bytes <= tuning.MAX_WORKGROUP_BYTES:
                candidates.append((config.label(), sch.mod["main"]))
        entry = {"task": name, "flops": 2 * m * n * k, "calls": calls, "args": tuning.argument_specs(func),
                 "workload": name, "candidates": []}
        for label, kernel in candidates:
            fn = f"k{len(functions)}"
            functions[fn] = kernel.with_attr("global_symbol", fn)
            entry["candidates"].append({"function": fn, "config": label})
        tasks.append(entry)

    write_candidates(args.work_dir, functions, tasks, PREFIX, args.runtime_dir, target)


def report(args):
    manifest, measured = read_measured(args.work_dir)
    results = {}
    print(f"{'shape':9} {'config':22} {'ms':>8} {'spread':>7} {'TFLOP/s':>8}  error")
    for task in manifest["tasks"]:
        timed = {}
        for candidate in task["candidates"]:
            result = measured.get(candidate["function"], {})
            ms = result.get("ms")
            rate = task["flops"] / ms / 1e9 if ms else None
            fmt = lambda x, spec: format(x, spec) if x is not None else "-"  # noqa: E731
            print(f"{task['task']:9} {candidate['config']:22} {fmt(ms, '8.3f')} {fmt(result.get('spread'), '7.3f')} "
                  f"{fmt(rate, '8.1f')}  {result.get('error') or ''}")
            if ms:
                timed[candidate["config"]] = ms
        best = min(timed, key=timed.get) if timed else None
        results[task["task"]] = {"flops": task["flops"], "calls_per_step": task["calls"], "ms": timed, "best": best,
                                 "best_tflops": round(task["flops"] / timed[best] / 1e9, 1) if best else None,
                                 "build_tflops": round(task["flops"] / timed["build"] / 1e9, 1)
                                 if "build" in timed else None}
    if args.json:
        args.json.write_text(json.dumps({"family": args.family, "what": __doc__.split("\n\n")[0], "results": results,
                                         "checked_against_torch": UNCHECKED}, indent=1) + "\n")


if __name__ == "__main__":
    command_line(__doc__, SHAPES, "bench-gemm", propose, report)

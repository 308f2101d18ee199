"""Checks and times the subgroup-matrix GEMM kernels (stages/lib/subgroup_matrix.py) alone on the lent GPU, at the
UNets' largest linear-layer shapes, in every tiling this script names: which one the build should take, in
seconds of device time where the whole-model benchmark takes minutes.

    .venv/bin/python bench/subgroup_matrix_gemm_check.py pack   # here, after bench/pack.sh (which empties .bench)
    # on the GPU machine (device tool, carry [".gpu", ".bench/npm", ".bench/gemm-check"]):
    source bench/gpu_setup.sh
    for s in .bench/gemm-check/spec.*.json; do gpu-node tests/python/js/run_kernels.mjs $s > ${s/spec./report.}; done
    python3 bench/subgroup_matrix_gemm_check.py compare

`pack` compiles each shape's TVM kernel (float16 operands, float32 sums, cast to float16 plus a float16 bias: a
fused linear layer as the float16 UNet has it, scheduled by the build's GEMM template, which fixes the interface
and the grid) once per tiling, under its own name, into one wasm, and writes each tiling's replacement as
export-lib would. The inputs are made on the GPU machine (too large to carry): the same values for every tiling
of a shape, saved once. `compare` checks each output against float64 numpy on sampled rows (relative L2 error
at most 2e-3: float16 outputs) and prints its GPU time per call (timestamp queries over 50 calls after 100
warm-up calls) beside TVM's own float16 kernel. An idle H200 does not reach its clock within a short run: in a
cold process only the long-running shapes rank reliably (bench/results/2026-12-01-h200-subgroup-matrix-gemm-tilings.json
says by how much); run it twice and read the second. A process per shape: Dawn's node bindings aborted in one
process of many thousands of calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".bench" / "gemm-check"
TOLERANCE = 2e-3
REPEATS = 50
SAMPLED_ROWS = 64
# name: (M, N, K[, batch]): batch 2 x tokens rows; with a batch, a Winograd GEMM (B as [batch, N, K], float32 out)
SHAPES = {
    "sdxl_geglu_in": (2048, 10240, 1280),  # fused_matmul20 in the SDXL profile
    "sdxl_geglu_out": (2048, 1280, 5120),  # fused_matmul21
    "sdxl_proj": (2048, 1280, 1280),  # fused_matmul18
    "sdxl_qkv": (2048, 3840, 1280),  # fused_matmul15
    "sd15_geglu_in": (8192, 2560, 320),
    "cross_kv": (154, 1280, 2048),  # 77-token keys and values: a ragged last tile
    "sdxl_winograd": (512, 640, 1280, 16),  # winograd4_gemm9: 16 products of a 4 x 4-tile transform
}


def tilings():
    from lib.subgroup_matrix import Tiling

    return {t.label().replace("-", "_"): t for t in [
        Tiling(k_step=32, sequential=True, prefetch=False),  # the first build's
        Tiling(),  # the build's where N < DIRECT_B_MIN_N
        Tiling(direct="b"),  # the build's from DIRECT_B_MIN_N on (subgroup_matrix.tiling_for)
        Tiling(direct="a"),
        Tiling(direct="ab"),
        Tiling(k_step=32, direct="ab"),
        Tiling(prefetch=False, direct="b"),
    ]}


def linear(m, n, k, batch=None):
    from tvm import te

    if batch:
        x = te.placeholder((batch, m, k), "float16", "x")
        w = te.placeholder((batch, n, k), "float16", "w")
        r = te.reduce_axis((0, k), "k")
        out = te.compute((batch, m, n), lambda s, i, j: te.sum(
            x[s, i, r].astype("float32") * w[s, j, r].astype("float32"), axis=r), name="gemm")
        return te.create_prim_func([x, w, out])
    x = te.placeholder((m, k), "float16", "x")
    w = te.placeholder((k, n), "float16", "w")
    b = te.placeholder((n,), "float16", "b")
    r = te.reduce_axis((0, k), "k")
    mm = te.compute((m, n), lambda i, j: te.sum(x[i, r].astype("float32") * w[r, j].astype("float32"), axis=r),
                    name="matmul")
    narrow = te.compute((m, n), lambda i, j: mm[i, j].astype("float16"), name="narrow")
    out = te.compute((m, n), lambda i, j: narrow[i, j] + b[j], name="bias")
    return te.create_prim_func([x, w, b, out])


def pack() -> None:
    sys.path[:0] = [str(ROOT / "stages"), str(ROOT / "tests" / "python")]
    import tvm
    from webgpu_kernels import PREFIX, build_wasm

    from lib import gemm, subgroup_matrix

    FOLDER.mkdir(parents=True, exist_ok=True)
    variants = {"tvm": None, **tilings()}
    funcs = {}
    for shape, dims in SHAPES.items():
        lowered = linear(*dims)
        scheduled = gemm.schedule(lowered).mod["main"]
        for variant in variants:
            funcs[f"{shape}__{variant}"] = (lowered, scheduled)
    runtime = next((ROOT / "artifacts" / "tvm-runtime").glob(version("apache-tvm")), None)
    if runtime is None:
        sys.exit("needs TVM's web runtime: make artifacts/tvm-runtime (any make sd15 builds it)")
    build_wasm(FOLDER, {n: s for n, (_, s) in funcs.items()}, runtime)
    wgsl = subgroup_matrix.split_wgsl((FOLDER / "kernels.wgsl").read_text())
    for leftover in ("raw.tar", "kernels.tar", "kernels.wgsl"):  # the device run needs only the wasm and the spec
        (FOLDER / leftover).unlink()
    spec = {"wasm": str((FOLDER / "kernels.wasm").relative_to(ROOT)), "prefix": PREFIX,
            "features": list(subgroup_matrix.FEATURES), "dawn_toggles": ["allow_unsafe_apis", "vulkan_enable_f16_on_nvidia"],
            "calls": [], "replacements": {}}
    for i, (shape, (m, n, k, *batch)) in enumerate(SHAPES.items()):
        for variant, tiling in variants.items():
            name = f"{shape}__{variant}"
            lowered, scheduled = funcs[name]
            kernel = f"{name}_kernel"
            if tiling is not None:
                gemm_form = subgroup_matrix.describe(lowered)
                gemm_form.tile_m, gemm_form.tile_n = subgroup_matrix.tiles(scheduled, gemm_form)
                try:
                    code = subgroup_matrix.kernel(kernel, gemm_form, wgsl[kernel], tiling=tiling)
                except subgroup_matrix.Ineligible as err:
                    print(f"{name}: {err}")
                    continue
                spec["replacements"][kernel] = {"wgsl": code, "workgroups_x": tiling.workgroups_x(gemm_form)}
            arrays = ([(batch + [m, k], 1.0), (batch + [n, k], 1.0 / np.sqrt(k))] if batch else
                      [([m, k], 1.0), ([k, n], 1.0 / np.sqrt(k)), ([n], 1.0)])
            inputs = [{"random": 3 * i + j + 1, "scale": scale, "dtype": "float16", "shape": dims}
                      for j, (dims, scale) in enumerate(arrays)]
            if variant == "tvm":
                for j, entry in enumerate(inputs):
                    entry["save"] = f".bench/gemm-check/{shape}.{j}.bin"
            spec["calls"].append({"fn": name, "inputs": inputs, "repeats": REPEATS, "output": {
                "file": f".bench/gemm-check/{name}.out", "shape": batch + [m, n],
                "dtype": "float32" if batch else "float16"}})
    (FOLDER / "spec.json").write_text(json.dumps(spec))
    # a process per shape: Dawn's node bindings have aborted in long runs of many calls
    for shape in SHAPES:
        (FOLDER / f"spec.{shape}.json").write_text(json.dumps(
            {**spec, "calls": [c for c in spec["calls"] if c["fn"].startswith(f"{shape}__")],
             "replacements": {k: r for k, r in spec["replacements"].items() if k.startswith(f"{shape}__")}}))
    print(f"{len(spec['calls'])} kernels ({len(spec['replacements'])} replaced) -> {FOLDER.relative_to(ROOT)}/spec.<shape>.json")


def compare() -> None:
    times, failed, summary, adapter = {}, [], {}, None
    for shape in SHAPES:
        path = FOLDER / f"report.{shape}.json"
        lines_ = path.read_text().strip().splitlines() if path.exists() else []
        if not lines_:
            print(f"{shape}: no report (the run failed)")
            failed.append(shape)
            continue
        report = json.loads(lines_[-1])
        if report["gpuErrors"]:
            print(f"{shape}: GPU errors: {report['gpuErrors']}"[:2000])
            failed.append(shape)
            continue
        times.update(report["times_ms"])
        adapter = report["adapter"]
    rng = np.random.default_rng(0)
    for shape, (m, n, k, *batch) in SHAPES.items():
        if f"{shape}__tvm" not in times:
            continue
        rows = np.sort(rng.choice(m, size=min(SAMPLED_ROWS, m), replace=False))
        if batch:
            x, w = (np.fromfile(FOLDER / f"{shape}.{j}.bin", dtype=np.float16).astype(np.float64) for j in range(2))
            x, w = x.reshape(*batch, m, k), w.reshape(*batch, n, k)
            expected = x[:, rows] @ np.swapaxes(w, -1, -2)
        else:
            x, w, b = (np.fromfile(FOLDER / f"{shape}.{j}.bin", dtype=np.float16).astype(np.float64) for j in range(3))
            x, w = x.reshape(m, k), w.reshape(k, n)
            expected = (x[rows] @ w).astype(np.float16).astype(np.float64) + b
        tvm_ms = times.get(f"{shape}__tvm")
        for call in json.loads((FOLDER / "spec.json").read_text())["calls"]:
            name = call["fn"]
            if not name.startswith(f"{shape}__"):
                continue
            out = np.fromfile(ROOT / call["output"]["file"], dtype=np.dtype(call["output"]["dtype"])).reshape(
                *batch, m, n)[..., rows, :].astype(np.float64)
            error = float(np.linalg.norm(out - expected) / np.linalg.norm(expected)) if np.isfinite(out).all() else float("inf")
            ms = times.get(name)
            tflops = 2 * (batch[0] if batch else 1) * m * n * k / (ms * 1e-3) / 1e12 if ms else None
            ok = error < TOLERANCE
            print(f"{name:40s} error {error:.2e}{'' if ok else ' FAILED'}  {ms:8.3f} ms  {tflops:6.1f} TFLOP/s"
                  f"  ({tvm_ms / ms:.2f} x TVM's)" if ms else f"{name}: not timed")
            summary[name] = {"rel_l2_err": error, "ms": ms, "tflops": tflops}
            if not ok:
                failed.append(name)
    (FOLDER / "summary.json").write_text(json.dumps({"adapter": adapter, "kernels": summary}, indent=1))
    if failed:
        sys.exit(f"wrong: {', '.join(failed)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["pack", "compare"])
    {"pack": pack, "compare": compare}[parser.parse_args().step]()

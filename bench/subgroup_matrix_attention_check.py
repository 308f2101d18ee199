"""Checks the subgroup-matrix attention kernels (stages/lib/subgroup_matrix_attention.py) alone on the lent GPU, at
the UNets' shapes, against float64 numpy: seconds per try, where the whole-model benchmark takes minutes.

    .venv/bin/python bench/subgroup_matrix_attention_check.py pack   # here, after bench/pack.sh (which empties .bench)
    # on the GPU machine (device tool, carry [".gpu", ".bench/npm", ".bench/attention-check"]):
    source bench/gpu_setup.sh; gpu-node tests/python/js/run_kernels.mjs .bench/attention-check/spec.json
    python3 bench/subgroup_matrix_attention_check.py compare

`pack` compiles each shape's TVM attention kernel (the fallback, which fixes the interface) into one wasm and
writes the tensor-core replacement as export-lib would, float16 inputs (the second block of keys scaled up where
asked, so that O is rescaled) and the expected output. `compare` prints each kernel's relative L2 error
(float16 probabilities: ~1e-4 expected) and fails above 1e-3. This is how the first form's error was found: its
scores came out one column early on the H200 and nowhere else. On the H200 on 2026-12-01: 2.1e-4, 7.3e-5 and
1.9e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".bench" / "attention-check"
TOLERANCE = 1e-3
# name: (batch x heads, query rows, keys, head width, scale of the keys after the first 64)
SHAPES = {
    "sdxl_4096": (2, 4096, 4096, 64, 1.0),  # SDXL's 64 x 64-latent self-attention (20 heads x batch in the model)
    "rescaled": (2, 128, 128, 64, 6.0),  # every row's maximum jumps in the second block
    "narrow": (2, 256, 128, 32, 1.0),
}


def pack() -> None:
    sys.path[:0] = [str(ROOT / "stages"), str(ROOT / "tests" / "python")]
    import tvm
    from tvm import te
    from webgpu_kernels import PREFIX, build_wasm, numpy_attention

    from lib import attention, subgroup_matrix

    FOLDER.mkdir(parents=True, exist_ok=True)
    funcs = {}
    for name, (bh, n_q, n_k, d, _) in SHAPES.items():
        q = te.placeholder((bh, n_q, d), "float16", "q")
        k_t = te.placeholder((bh, d, n_k), "float16", "k_t")
        v = te.placeholder((bh, n_k, d), "float16", "v")
        lowered = te.create_prim_func([q, k_t, v, attention.reference(q, k_t, v, "float32")]).with_attr(
            attention.KERNEL_ATTR, attention.KERNEL_NAME)
        funcs[name] = (lowered, attention.kernel_for(lowered))
    runtime = next((ROOT / "artifacts" / "tvm-runtime").glob(version("apache-tvm")), None)
    if runtime is None:
        sys.exit("needs TVM's web runtime: make artifacts/tvm-runtime (any make sd15 builds it)")
    build_wasm(FOLDER, {n: s for n, (_, s) in funcs.items()}, runtime)
    wgsl = subgroup_matrix.split_wgsl((FOLDER / "kernels.wgsl").read_text())
    spec = {"wasm": str((FOLDER / "kernels.wasm").relative_to(ROOT)), "prefix": PREFIX,
            "features": list(subgroup_matrix.FEATURES), "dawn_toggles": ["allow_unsafe_apis", "vulkan_enable_f16_on_nvidia"],
            "calls": [], "replacements": {}}
    for i, (name, (bh, n_q, n_k, d, later)) in enumerate(SHAPES.items()):
        lowered, scheduled = funcs[name]
        kernel = f"{name}_kernel"
        spec["replacements"].update(subgroup_matrix.library_kernels(
            tvm.IRModule({name: lowered}), tvm.IRModule({name: scheduled}), {kernel: wgsl[kernel]}, ""))
        rng = np.random.default_rng(i)
        q = (rng.standard_normal((bh, n_q, d)) / np.sqrt(d)).astype(np.float16)
        k_t = rng.standard_normal((bh, d, n_k))
        k_t[:, :, 64:] *= later
        k_t = k_t.astype(np.float16)
        v = rng.standard_normal((bh, n_k, d)).astype(np.float16)
        call = {"fn": name, "inputs": [], "output": {"file": f".bench/attention-check/{name}.out", "shape": [bh, n_q, d],
                                                    "dtype": "float32"}}
        for j, array in enumerate((q, k_t, v)):
            array.tofile(FOLDER / f"{name}.{j}.bin")
            call["inputs"].append({"file": f".bench/attention-check/{name}.{j}.bin", "dtype": "float16",
                                   "shape": list(array.shape)})
        spec["calls"].append(call)
        numpy_attention(q, k_t, v).astype(np.float32).tofile(FOLDER / f"{name}.expected")
    missing = set(f"{n}_kernel" for n in SHAPES) - set(spec["replacements"])
    if missing:
        sys.exit(f"no subgroup-matrix kernel for {sorted(missing)}")
    (FOLDER / "spec.json").write_text(json.dumps(spec))
    print(f"{len(SHAPES)} kernels -> {FOLDER.relative_to(ROOT)}/spec.json")


def compare() -> None:
    failed = []
    for call in json.loads((FOLDER / "spec.json").read_text())["calls"]:
        shape = call["output"]["shape"]
        out = np.fromfile(ROOT / call["output"]["file"], dtype=np.float32).reshape(shape).astype(np.float64)
        expected = np.fromfile(FOLDER / f"{call['fn']}.expected", dtype=np.float32).reshape(shape).astype(np.float64)
        error = float(np.linalg.norm(out - expected) / np.linalg.norm(expected))
        print(f"{call['fn']}: relative error {error:.3g}{'' if error < TOLERANCE else '  FAILED'}")
        if not error < TOLERANCE:
            failed.append(call["fn"])
    if failed:
        sys.exit(f"wrong: {', '.join(failed)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["pack", "compare"])
    {"pack": pack, "compare": compare}[parser.parse_args().step]()

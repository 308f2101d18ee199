"""Single kernels on a WebGPU adapter here (SwiftShader, or lavapipe for float16): compiled with the build's
TIR pipeline, linked with the web runtime, called through tvmjs + Dawn in Node (js/run_kernels.mjs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import LAVAPIPE_ICD, clean_env, lavapipe_env

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

PREFIX = "test_kernels_"


def build_wasm(folder: Path, kernels: dict, runtime: Path) -> Path:
    """`kernels` ({name: PrimFunc}) compiled for WebGPU and linked with the web runtime into one .wasm (TVM's
    WGSL of them beside it, as kernels.wgsl)."""
    import tvm

    from export_lib import deterministic_tar
    from lib.pipeline import tir_pipeline
    from lib.targets import target
    from lib.wasm_link import link_wasm

    module = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in kernels.items()})
    with tvm.transform.PassContext(opt_level=3):
        library = tvm.tirx.build(module.with_attr("system_lib_prefix", PREFIX), target=target("webgpu"),
                                 pipeline=tir_pipeline())
    (webgpu,) = [m for m in library.imports if m.kind == "webgpu"]
    (folder / "kernels.wgsl").write_text(webgpu.inspect_source())
    library.export_library(str(folder / "raw.tar"))
    (folder / "kernels.tar").write_bytes(deterministic_tar(folder / "raw.tar"))
    link_wasm([folder / "kernels.tar"], runtime, folder / "kernels.wasm", shipped=False)
    return folder / "kernels.wasm"


def run_kernels(wasm: Path, folder: Path, calls: list, icd: str, features=(), replacements=None) -> dict:
    """Runs `calls` ([(kernel, inputs, output shape, output dtype)]) on the Vulkan driver `icd` and returns
    {kernel: output}. Shaders compile at their first call, so a float16 kernel in the library does not stop a
    run on an adapter without shader-f16 that does not call it. `replacements` ({WGSL kernel name: {wgsl, workgroups_x}}) take
    the place of the library's own kernels, as the runtime's replaceKernels does for subgroup matrices."""
    spec = {"wasm": str(wasm), "prefix": PREFIX, "features": list(features), "calls": [],
            "replacements": replacements or {}}
    for name, arrays, shape, dtype in calls:
        entry = {"fn": name, "inputs": [], "output": {"file": str(folder / f"{name}.out"), "shape": shape,
                                                      "dtype": dtype}}
        for i, array in enumerate(arrays):
            path = folder / f"{name}.{i}.bin"
            array.tofile(path)
            entry["inputs"].append({"file": str(path), "dtype": str(array.dtype), "shape": list(array.shape)})
        spec["calls"].append(entry)
    (folder / "spec.json").write_text(json.dumps(spec))
    env = lavapipe_env(folder) if icd == str(LAVAPIPE_ICD) else clean_env(VK_ICD_FILENAMES=icd,
                                                                           XDG_RUNTIME_DIR=str(folder))
    result = subprocess.run(["node", "tests/python/js/run_kernels.mjs", str(folder / "spec.json")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["gpuErrors"] == [], report["gpuErrors"]
    assert report["replaced"] == sorted(replacements or {}), "a replacement kernel was not the one created"
    return {name: np.fromfile(folder / f"{name}.out", dtype=np.dtype(dtype)).reshape(shape)
            for name, _, shape, dtype in calls}


def relative_error(ours, ref) -> float:
    return float(np.linalg.norm(ours.astype(np.float64) - ref) / np.linalg.norm(ref))


def assert_matches(ours, expected, tolerance: float, label: str) -> None:
    """Every value written (outputs start as NaN) and within `tolerance` relative L2 error of `expected`."""
    assert np.isfinite(ours).all(), f"{label}: NaN left in the output: a value the kernel did not write"
    error = relative_error(ours, expected)
    print(f"{label}: relative error {error:.2e}")
    assert error < tolerance, f"{label}: relative error {error:.2e} (tolerance {tolerance:.0e})"


def numpy_attention(q, k_t, v):
    """softmax(q k_t) v in float64: what the attention kernels (attention.py, subgroup_matrix_attention.py) compute."""
    scores = np.einsum("bid,bdj->bij", q.astype(np.float64), k_t.astype(np.float64))
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bij,bjd->bid", probs / probs.sum(-1, keepdims=True), v.astype(np.float64))

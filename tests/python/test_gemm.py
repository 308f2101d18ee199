"""The GEMM template (stages/lib/gemm.py) on SwiftShader against float64 numpy, and on lavapipe with float16
inputs.

    .venv/bin/python -m pytest tests/python/test_gemm.py -q

Cases cover what the schedule special-cases: shapes that are tile multiples and ragged ones (padded to the
tile, bounds checked only in the loads), the operand layouts (x [M, K] with the build's transposed weight
[K, N], and a torch-layout weight [N, K]: each is loaded along its contiguous axis), a batch of products, an
epilogue fused into the stores (bias + GELU), the smaller tiles, and float16 inputs accumulated in float32.
Outputs start as NaN, so an unwritten value fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from conftest import LAVAPIPE_ICD, SWIFTSHADER_ICD
from webgpu_kernels import assert_matches, build_wasm, run_kernels

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

from lib import gemm  # noqa: E402
from lib.gemm import Config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

# float32 products of up to 96 terms against float64: a few ulps of the output's scale.
TOLERANCE = 1e-5
# float16 inputs (rounded here too), float32 sums, a float16 result: float16's rounding of the output.
FLOAT16_TOLERANCE = 1e-3

SMALL = Config(virtual_m=1, virtual_n=1)  # 64 x 64 tiles

# (name, batch or None, M, N, K, weight layout "kn" (the build's) or "nk" (torch's), epilogue, config)
CASES = [
    ("tile-multiple", None, 128, 128, 32, "kn", "bias", Config()),
    ("ragged", None, 130, 70, 50, "kn", "bias", Config()),
    ("torch-layout-weight", None, 100, 136, 40, "nk", "bias", Config()),
    ("batched", 3, 70, 90, 24, "kn", None, Config()),
    ("bias-gelu", None, 96, 200, 96, "kn", "gelu", Config(k_step=16, virtual_n=1)),
    ("small-tiles-ragged", None, 65, 33, 17, "kn", "bias", SMALL),
]
FLOAT16_CASE = ("float16_inputs", None, 130, 72, 48, "kn", "bias", Config())


def kernel(batch, m, n, k, layout, epilogue, dtype="float32"):
    """The unscheduled PrimFunc (x, w[, bias], out) as the build's legalize and fuse make it."""
    from tvm import te

    acc = "float32"
    lead = (batch,) if batch else ()
    x = te.placeholder((*lead, m, k), dtype, "x")
    w = te.placeholder((*lead, *((k, n) if layout == "kn" else (n, k))), dtype, "w")
    r = te.reduce_axis((0, k), "k")

    def weight(idx, j):
        return w[(*idx, r, j) if layout == "kn" else (*idx, j, r)].astype(acc)

    mm = te.compute((*lead, m, n), lambda *ij: te.sum(x[(*ij[:-1], r)].astype(acc) * weight(ij[:-2], ij[-1]),
                                                       axis=r), name="matmul")
    args = [x, w]
    if epilogue:
        b = te.placeholder((n,), acc, "b")
        args.append(b)
        out = te.compute(mm.shape, lambda *ij: mm[ij] + b[ij[-1]], name="bias")
        if epilogue == "gelu":
            out = te.compute(out.shape, lambda *ij: out[ij] * 0.5 * (1 + te.erf(out[ij] * 0.7071067811865476)),
                             name="gelu")
    else:
        out = mm
    if dtype != acc:
        out = te.compute(out.shape, lambda *ij: out[ij].astype(dtype), name="narrow")
    return te.create_prim_func([*args, out])


def numpy_reference(x, w, b, layout, epilogue):
    from math import erf

    x, w = x.astype(np.float64), w.astype(np.float64)
    out = x @ (w if layout == "kn" else np.swapaxes(w, -1, -2))
    if epilogue:
        out = out + b.astype(np.float64)
    if epilogue == "gelu":
        out = out * 0.5 * (1 + np.vectorize(erf)(out / np.sqrt(2)))
    return out


def inputs_for(batch, m, n, k, layout, epilogue, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    x = rng.standard_normal((*lead, m, k)).astype(dtype)
    w = (rng.standard_normal((*lead, *((k, n) if layout == "kn" else (n, k)))) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(np.float32) if epilogue else None
    return x, w, b


def scheduled(case, dtype="float32"):
    _, batch, m, n, k, layout, epilogue, config = case
    sch = gemm.schedule(kernel(batch, m, n, k, layout, epilogue, dtype), config)
    assert sch is not None, "the template declined a matmul"
    return sch.mod["main"]


# (name, batch, in channels, size, out channels, kernel size, stride): NCHW with bias, padding kernel // 2
CONV_CASES = [
    ("conv3x3", 2, 12, 10, 40, 3, 1),
    ("conv3x3-stride2", 1, 8, 11, 24, 3, 2),
    ("conv1x1", 2, 20, 9, 36, 1, 1),
]


def conv_kernel(batch, cin, size, cout, ksize, stride):
    from tvm import te, topi

    data = te.placeholder((batch, cin, size, size), "float32", "data")
    weight = te.placeholder((cout, cin, ksize, ksize), "float32", "weight")
    bias = te.placeholder((cout,), "float32", "bias")
    conv = topi.nn.conv2d_nchw(data, weight, stride, ksize // 2, 1)
    out = te.compute(conv.shape, lambda n, c, h, w: conv[n, c, h, w] + bias[c], name="bias")
    return te.create_prim_func([data, weight, bias, out])


def numpy_conv(data, weight, bias, stride):
    ksize = weight.shape[-1]
    pad = ksize // 2
    padded = np.pad(data.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    size = (data.shape[-1] + 2 * pad - ksize) // stride + 1
    out = np.zeros((data.shape[0], weight.shape[0], size, size))
    for dy in range(ksize):
        for dx in range(ksize):
            window = padded[:, :, dy:dy + stride * size:stride, dx:dx + stride * size:stride]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, dy, dx].astype(np.float64))
    return out + bias.astype(np.float64)[None, :, None, None]


def conv_inputs(case, seed):
    _, batch, cin, size, cout, ksize, _ = case
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
    weight = (rng.standard_normal((cout, cin, ksize, ksize)) / np.sqrt(cin * ksize * ksize)).astype(np.float32)
    return data, weight, rng.standard_normal(cout).astype(np.float32)


@pytest.fixture(scope="module")
def kernels_wasm(tiny_build, tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("needs node")
    runtime = tiny_build.artifacts / "tvm-runtime" / version("apache-tvm")
    kernels = {case[0].replace("-", "_"): scheduled(case) for case in CASES}
    kernels[FLOAT16_CASE[0]] = scheduled(FLOAT16_CASE, "float16")
    for case in CONV_CASES:
        sch = gemm.schedule(conv_kernel(*case[1:]), SMALL)
        assert sch is not None, "the template declined a convolution"
        kernels[case[0].replace("-", "_")] = sch.mod["main"]
    return build_wasm(tmp_path_factory.mktemp("gemm-wasm"), kernels, runtime)


@pytest.fixture(scope="module")
def webgpu_outputs(kernels_wasm, tmp_path_factory):
    if not os.path.exists(SWIFTSHADER_ICD):
        pytest.skip("needs SwiftShader (make setup)")
    calls, expected = [], {}
    for i, (name, batch, m, n, k, layout, epilogue, _) in enumerate(CASES):
        x, w, b = inputs_for(batch, m, n, k, layout, epilogue, seed=i)
        shape = [batch, m, n] if batch else [m, n]
        calls.append((name.replace("-", "_"), (x, w) if b is None else (x, w, b), shape, "float32"))
        expected[name] = numpy_reference(x, w, b, layout, epilogue)
    for i, case in enumerate(CONV_CASES):
        data, weight, bias = conv_inputs(case, seed=100 + i)
        expected[case[0]] = numpy_conv(data, weight, bias, case[-1])
        calls.append((case[0].replace("-", "_"), (data, weight, bias), list(expected[case[0]].shape), "float32"))
    outputs = run_kernels(kernels_wasm, tmp_path_factory.mktemp("gemm"), calls, SWIFTSHADER_ICD)
    return {name: (outputs[name.replace("-", "_")], expected[name]) for name in expected}


@pytest.mark.parametrize("name", [case[0] for case in CASES + CONV_CASES])
def test_kernel_matches_numpy(webgpu_outputs, name):
    assert_matches(*webgpu_outputs[name], TOLERANCE, name)


def test_float16_inputs_on_lavapipe(kernels_wasm, tmp_path):
    if not LAVAPIPE_ICD.exists():
        pytest.skip(f"needs {LAVAPIPE_ICD} (make setup fetches lavapipe)")
    name, batch, m, n, k, layout, epilogue, _ = FLOAT16_CASE
    x, w, b = inputs_for(batch, m, n, k, layout, epilogue, seed=11, dtype=np.float16)
    out = run_kernels(kernels_wasm, tmp_path, [(name, (x, w, b), [m, n], "float16")], str(LAVAPIPE_ICD),
                      features=["shader-f16"])[name]
    assert_matches(out, numpy_reference(x, w, b, layout, epilogue), FLOAT16_TOLERANCE, "float16 inputs")


def test_template_declines_what_is_not_a_matmul():
    from tvm import te

    a = te.placeholder((64, 64), "float32", "a")
    out = te.compute((64, 64), lambda i, j: a[i, j] * 2, name="double")
    assert gemm.schedule(te.create_prim_func([a, out]), Config()) is None


def test_tuning_space_offers_the_template():
    """make tune proposes the template's tiles first, each within WebGPU's default workgroup limits, and a
    proposed configuration schedules the kernel with the template (what the tuning log then records)."""
    import tvm_ffi

    from lib import tuning
    from lib.targets import target

    space = tuning.gemm_space()
    assert space and all(config[0] == tuning.GEMM for config in space)
    assert tuning.proposal_order("any", [])[:len(space)] == space
    for _, tx, ty, vn, vm, k, _ in space:
        config = Config(threads_x=tx, threads_y=ty, virtual_n=vn, virtual_m=vm, k_step=k)
        assert config.workgroup_bytes <= tuning.MAX_WORKGROUP_BYTES and tx * ty <= tuning.MAX_THREADS
    assert tuning.normalize(list(space[0])) == space[0]  # as the log stores it (JSON lists)
    _, tx, ty, vn, vm, k, unroll = space[-1]
    func = kernel(None, 256, 256, 64, "kn", "bias")
    proposed = tuning.schedule_for(func, target("webgpu"), space[-1])
    direct = gemm.schedule(func, Config(threads_x=tx, threads_y=ty, virtual_n=vn, virtual_m=vm, k_step=k,
                                        unroll=unroll))
    assert proposed is not None and tvm_ffi.structural_equal(proposed.mod, direct.mod)

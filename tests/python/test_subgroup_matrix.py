"""The float16 libraries' subgroup-matrix kernels (stages/lib/subgroup_matrix.py: GEMMs,
stages/lib/subgroup_matrix_attention.py: the fused attention).

    .venv/bin/python -m pytest tests/python/test_subgroup_matrix.py -q

No adapter here offers chromium-experimental-subgroup-matrix (lavapipe has Vulkan's cooperative matrices, but
Dawn does not expose them on it), so the tensor-core kernels themselves are checked on the H200 by the
benchmark (bench/gpu_run.sh ... sgmm: the UNet against PyTorch). Here, on lavapipe (float16), the same
kernels with the fragment products done in plain arithmetic (`emulate`) take the place of TVM's kernels through
the runtime's replaceKernels and must give numpy's result: that checks what the two forms share: the bindings
copied from TVM's WGSL, the grid and the tile each workgroup takes, the staging of both operand layouts, the
batch, and the epilogue printed from the lowered function. Then which kernels the generator takes and which it
leaves to TVM.
"""

from __future__ import annotations

import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from conftest import LAVAPIPE_ICD
from webgpu_kernels import assert_matches, build_wasm, numpy_attention, run_kernels

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

from lib import attention, gemm, subgroup_matrix, subgroup_matrix_attention  # noqa: E402
from lib.gemm import Config  # noqa: E402
from lib.subgroup_matrix import Tiling  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

TOLERANCE = 2e-3  # float16 outputs (their rounding) of float32 sums; the f16 bias added in float16

# (name, batch or None, M, N, K, B layout "kn" (a matmul's weight) or "nk" (a Winograd GEMM's), epilogue, config)
CASES = [
    # a linear layer as FuseTIR leaves it: float32 sums, cast to float16, + a float16 bias
    ("bias", None, 128, 192, 64, "kn", "bias", Config(virtual_m=1, virtual_n=1)),
    # 64 x 128 tiles (the template's tile where M and N reach 2048): two 64-wide halves per workgroup
    ("wide-tiles", None, 64, 256, 96, "kn", "bias", Config(threads_y=8)),
    # the time embedding's form: bias, then x * sigmoid(x)
    ("silu", None, 64, 128, 32, "kn", "silu", Config(virtual_m=1, virtual_n=1)),
    # a Winograd GEMM: a batch of products, B as [batch, N, K], float32 out
    ("winograd", 3, 128, 64, 64, "nk", None, Config(virtual_m=1, virtual_n=1)),
    # rows that are no multiple of 64 (cross-attention's keys and values of 2 x 77 tokens): a ragged last tile
    ("ragged-rows", None, 154, 128, 64, "kn", "bias", Config(virtual_m=1, virtual_n=1)),
    ("ragged-rows-batched", 2, 70, 64, 32, "nk", None, Config(virtual_m=1, virtual_n=1)),
    # as wide as the products whose B fragments the build loads straight from storage (subgroup_matrix.tiling_for)
    ("wide-n", None, 64, subgroup_matrix.DIRECT_B_MIN_N, 32, "kn", "bias", Config(virtual_m=1, virtual_n=1)),
]


# Tilings other than the build's default (subgroup_matrix.Tiling), which bench/subgroup_matrix_gemm_check.py measures
# against it on the GPU (the build takes direct_b where N is wide: tiling_for, and the "wide-n" case above): each must
# compute the same product. Run on the cases of 128-wide tiles and of a Winograd batch (B column-major).
TILINGS = {
    "rows32": Tiling(rows=32),  # four workgroups per TVM's 64 x 128 tile
    "in_turn": Tiling(k_step=32, sequential=True, prefetch=False),  # the first build's: 128 columns in turn
    "direct_b": Tiling(direct="b"),  # B's fragments straight from storage (column-major for [N, K])
    "direct_ab": Tiling(direct="ab", prefetch=False),
}
TILING_CASES = ("wide-tiles", "winograd")

# (name, bh, n_q, n_k, d, output dtype (float32, as FuseAttention makes it), TVM's attention.Config or None for its default, scale of the later keys)
ATTENTION_CASES = [
    # 64-wide heads (SDXL's: O staged in all of the scores' workgroup memory), four 32-row workgroups where TVM's
    # kernel has one of 128 rows; the second block of keys scores far higher (x 6), so every row's maximum jumps
    # and O is rescaled
    ("attention", 2, 128, 128, 64, "float32", attention.Config(128, 1, 8), 6.0),
]
ATTENTION_TOLERANCE = 2e-3  # the probabilities rounded to float16 before the product with v (float32 sums)


def attention_kernel(bh, n_q, n_k, d, out_dtype):
    """The reference PrimFunc as FuseAttention leaves it in a float16 library (marked for the GPU rule)."""
    from tvm import te

    q = te.placeholder((bh, n_q, d), "float16", "q")
    k_t = te.placeholder((bh, d, n_k), "float16", "k_t")
    v = te.placeholder((bh, n_k, d), "float16", "v")
    out = attention.reference(q, k_t, v, out_dtype)
    return te.create_prim_func([q, k_t, v, out]).with_attr(attention.KERNEL_ATTR, attention.KERNEL_NAME)


def attention_inputs(bh, n_q, n_k, d, later_scale, seed):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((bh, n_q, d)) / np.sqrt(d)).astype(np.float16)
    k_t = rng.standard_normal((bh, d, n_k))
    k_t[:, :, subgroup_matrix_attention.KEYS:] *= later_scale
    return q, k_t.astype(np.float16), rng.standard_normal((bh, n_k, d)).astype(np.float16)


def kernel(batch, m, n, k, layout, epilogue):
    from tvm import te

    lead = (batch,) if batch else ()
    x = te.placeholder((*lead, m, k), "float16", "x")
    w = te.placeholder((*lead, *((k, n) if layout == "kn" else (n, k))), "float16", "w")
    r = te.reduce_axis((0, k), "k")

    def weight(idx, j):
        return w[(*idx, r, j) if layout == "kn" else (*idx, j, r)].astype("float32")

    mm = te.compute((*lead, m, n), lambda *ij: te.sum(x[(*ij[:-1], r)].astype("float32") * weight(ij[:-2], ij[-1]),
                                                       axis=r), name="matmul")
    if not epilogue:
        return te.create_prim_func([x, w, mm])
    b = te.placeholder((n,), "float16", "b")
    narrow = te.compute(mm.shape, lambda *ij: mm[ij].astype("float16"), name="narrow")
    out = te.compute(mm.shape, lambda *ij: b[ij[-1]] + narrow[ij], name="bias")
    if epilogue == "silu":
        gate = te.compute(out.shape, lambda *ij: te.sigmoid(out[ij]), name="gate")
        out = te.compute(out.shape, lambda *ij: out[ij] * gate[ij], name="silu")
    return te.create_prim_func([x, w, b, out])


def reference(x, w, b, layout, epilogue):
    out = x.astype(np.float64) @ (w if layout == "kn" else np.swapaxes(w, -1, -2)).astype(np.float64)
    if not epilogue:
        return out
    out = out.astype(np.float16).astype(np.float64) + b.astype(np.float64)
    if epilogue == "silu":
        out = out / (1 + np.exp(-out))
    return out


def inputs(batch, m, n, k, layout, epilogue, seed):
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    x = rng.standard_normal((*lead, m, k)).astype(np.float16)
    w = (rng.standard_normal((*lead, *((k, n) if layout == "kn" else (n, k)))) / np.sqrt(k)).astype(np.float16)
    return (x, w) if not epilogue else (x, w, rng.standard_normal(n).astype(np.float16))


@pytest.fixture(scope="module")
def built(tiny_build, tmp_path_factory):
    """{case: (lowered PrimFunc, scheduled PrimFunc)}, their wasm and TVM's WGSL of them."""
    if shutil.which("node") is None:
        pytest.skip("needs node")
    funcs = {}
    for name, batch, m, n, k, layout, epilogue, config in CASES:
        lowered = kernel(batch, m, n, k, layout, epilogue)
        sch = gemm.schedule(lowered, config)
        assert sch is not None
        funcs[name.replace("-", "_")] = (lowered, sch.mod["main"])
        if name in TILING_CASES:  # the same kernel under a name per tiling, each replaced by its own
            funcs.update({f"{name.replace('-', '_')}__{t}": (lowered, sch.mod["main"]) for t in TILINGS})
    for name, bh, n_q, n_k, d, out_dtype, config, _ in ATTENTION_CASES:
        lowered = attention_kernel(bh, n_q, n_k, d, out_dtype)
        funcs[name.replace("-", "_")] = (lowered, attention.kernel_for(lowered, config))
    folder = tmp_path_factory.mktemp("subgroup-matrix")
    runtime = tiny_build.artifacts / "tvm-runtime" / version("apache-tvm")
    wasm = build_wasm(folder, {n: scheduled for n, (_, scheduled) in funcs.items()}, runtime)
    return funcs, wasm, subgroup_matrix.split_wgsl((folder / "kernels.wgsl").read_text())


def generated(built, name, emulate):
    """(kernel name, record) as export-lib makes them for a library (in a model's, the system-library prefix leads
    the kernel's name)."""
    import tvm

    funcs, _, wgsl = built
    lowered, scheduled = funcs[name]
    found = subgroup_matrix.library_kernels(tvm.IRModule({name: lowered}), tvm.IRModule({name: scheduled}),
                                            {f"{name}_kernel": wgsl[f"{name}_kernel"]}, "", emulate)
    assert list(found) == [f"{name}_kernel"], f"{name}: no subgroup-matrix kernel"
    return f"{name}_kernel", found[f"{name}_kernel"]


def run_emulated_on_lavapipe(built, folder, cases, tolerance, make=None) -> dict:
    """Runs each of `cases` ({name: (inputs, output shape, output dtype, expected)}) through its generated kernel's
    emulated form on lavapipe (`make(name)` -> (kernel name, record), else as export-lib generates it), in place of
    TVM's kernel, and compares it with what was expected; returns the generated records ({kernel name: record})."""
    if not LAVAPIPE_ICD.exists():
        pytest.skip(f"needs {LAVAPIPE_ICD} (make setup fetches lavapipe)")
    _, wasm, _ = built
    replacements = dict((make or (lambda name: generated(built, name, emulate=True)))(name) for name in cases)
    calls = [(name, arrays, shape, dtype) for name, (arrays, shape, dtype, _) in cases.items()]
    outputs = run_kernels(wasm, folder, calls, str(LAVAPIPE_ICD), features=["shader-f16"], replacements=replacements)
    for name, out in outputs.items():
        assert_matches(out, cases[name][3], tolerance, name)
    return replacements


def test_emulated_kernels_match_numpy_on_lavapipe(built, tmp_path):
    cases = {}
    for i, (case, batch, m, n, k, layout, epilogue, _) in enumerate(CASES):
        name = case.replace("-", "_")
        arrays = inputs(batch, m, n, k, layout, epilogue, seed=i)
        cases[name] = (arrays, [batch, m, n] if batch else [m, n], "float16" if epilogue else "float32",
                       reference(*arrays if epilogue else (*arrays, None), layout, epilogue))
    records = run_emulated_on_lavapipe(built, tmp_path, cases, TOLERANCE)
    # a workgroup per 64 x 64 tile: two where TVM's tiles are 128 wide
    assert {name: record["workgroups_x"] for name, record in records.items()} == {
        f"{case[0].replace('-', '_')}_kernel": 2 if case[0] == "wide-tiles" else 1 for case in CASES}
    # B staged in workgroup memory but where N is wide
    assert {name for name, record in records.items() if "var<workgroup> Bs" not in record["wgsl"]} == {"wide_n_kernel"}


def test_emulated_tilings_match_numpy_on_lavapipe(built, tmp_path):
    """The generator's other tilings (fewer rows per workgroup, TVM's wide tiles taken in turn, no prefetch, fragments
    loaded from storage instead of staged), emulated, give numpy's result too."""
    funcs, _, wgsl = built

    def make(name):
        lowered, scheduled = funcs[name]
        form = subgroup_matrix.describe(lowered)
        form.tile_m, form.tile_n = subgroup_matrix.tiles(scheduled, form)
        tiling = TILINGS[name.split("__")[1]]
        code = subgroup_matrix.kernel(f"{name}_kernel", form, wgsl[f"{name}_kernel"], emulate=True, tiling=tiling)
        return f"{name}_kernel", {"wgsl": code, "workgroups_x": tiling.workgroups_x(form)}

    cases = {}
    for i, (case, batch, m, n, k, layout, epilogue, _) in enumerate(CASES):
        if case in TILING_CASES:
            arrays = inputs(batch, m, n, k, layout, epilogue, seed=i)
            for label in TILINGS:
                cases[f"{case.replace('-', '_')}__{label}"] = (
                    arrays, [batch, m, n] if batch else [m, n], "float16" if epilogue else "float32",
                    reference(*arrays if epilogue else (*arrays, None), layout, epilogue))
    replacements = run_emulated_on_lavapipe(built, tmp_path, cases, TOLERANCE, make)
    assert replacements["wide_tiles__rows32_kernel"]["workgroups_x"] == 4
    assert replacements["wide_tiles__in_turn_kernel"]["workgroups_x"] == 1


def test_emulated_attention_matches_numpy_on_lavapipe(built, tmp_path):
    """The attention kernel's online softmax, lazy rescaling, staging and its finer grid (the runtime dispatches
    `workgroups_x` times TVM's workgroups), with the fragment products in plain arithmetic."""
    cases = {}
    for i, (case, bh, n_q, n_k, d, out_dtype, _, later_scale) in enumerate(ATTENTION_CASES):
        name = case.replace("-", "_")
        q, k_t, v = attention_inputs(bh, n_q, n_k, d, later_scale, seed=i)
        cases[name] = ((q, k_t, v), [bh, n_q, d], out_dtype, numpy_attention(q, k_t, v))
    records = run_emulated_on_lavapipe(built, tmp_path, cases, ATTENTION_TOLERANCE)
    assert all(record["workgroups_x"] > 1 for record in records.values())


def test_tensor_core_kernels_use_subgroup_matrices_with_the_same_interface(built):
    """The real kernels: the feature enabled, 16 fragments accumulated per K step, stored through workgroup
    memory, and TVM's bindings and entry point kept (the emulated form is checked above; this one runs only
    where the feature is: the benchmark)."""
    funcs, _, wgsl = built
    for name in [case[0].replace("-", "_") for case in CASES]:
        kernel_name, record = generated(built, name, emulate=False)
        code = record["wgsl"]
        assert "enable chromium_experimental_subgroup_matrix;" in code
        assert code.count("subgroupMatrixMultiplyAccumulate(") == 16 * subgroup_matrix.K_STEP // 16
        assert code.count("subgroupMatrixStore<row_major>(&Cs") == 16
        assert f"fn {kernel_name}(" in code
        tvm_bindings = [line for line in wgsl[kernel_name].splitlines() if line.startswith("@group(0)")]
        ours = [line for line in code.splitlines() if line.startswith("@group(0)")]
        assert [b.split(" var")[0] for b in ours] == [b.split(" var")[0] for b in tvm_bindings]


def test_tensor_core_attention_keeps_the_interface(built):
    """The real attention kernel: both products on fragments (per block of 64 keys, 2 x 4 score fragments over
    d / 16 steps and 2 x d / 16 output fragments over 4 steps), TVM's bindings and entry point kept."""
    _, _, wgsl = built
    for case, bh, n_q, n_k, d, *_ in ATTENTION_CASES:
        kernel_name, record = generated(built, case.replace("-", "_"), emulate=False)
        code = record["wgsl"]
        assert "enable chromium_experimental_subgroup_matrix;" in code and f"fn {kernel_name}(" in code
        assert code.count("subgroupMatrixMultiplyAccumulate(") == 2 * 2 * 4 * d // 16
        tvm_bindings = [line for line in wgsl[kernel_name].splitlines() if line.startswith("@group(0)")]
        assert [line for line in code.splitlines() if line.startswith("@group(0)")] == tvm_bindings


@pytest.mark.parametrize("bh, n_q, n_k, d, dtype, why", [
    (2, 128, 128, 40, "float16", "heads 40 wide"),  # SD 1.5's: no multiple of 16
    (2, 128, 128, 128, "float16", "heads 128 wide"),  # O would not fit the scores' memory
    (2, 128, 77, 64, "float16", "over 77 keys"),  # cross-attention's text tokens: no multiple of 64
    (2, 128, 128, 64, "float32", "not float16"),
])
def test_attention_the_generator_leaves_to_tvm(bh, n_q, n_k, d, dtype, why):
    from tvm import te

    q = te.placeholder((bh, n_q, d), dtype, "q")
    k_t = te.placeholder((bh, d, n_k), dtype, "k_t")
    v = te.placeholder((bh, n_k, d), dtype, "v")
    lowered = te.create_prim_func([q, k_t, v, attention.reference(q, k_t, v, "float32")]).with_attr(
        attention.KERNEL_ATTR, attention.KERNEL_NAME)
    with pytest.raises(subgroup_matrix.Ineligible, match=why):
        subgroup_matrix_attention.describe(lowered, attention.kernel_for(lowered))


def test_what_the_generator_leaves_to_tvm():
    """Columns the one-subgroup tile does not divide, a K off the K step, dlight's tiles, a float32 product and
    an epilogue operation the printer does not know all keep TVM's kernel."""
    from tvm import te

    def ineligible(func, config=Config(virtual_m=1, virtual_n=1)):
        sch = gemm.schedule(func, config)
        with pytest.raises(subgroup_matrix.Ineligible):
            subgroup_matrix.tiles(sch.mod["main"], subgroup_matrix.describe(func))

    ineligible(kernel(None, 128, 100, 64, "kn", "bias"))  # N not a tile multiple
    ineligible(kernel(None, 128, 128, 40, "kn", "bias"))  # K not a multiple of the K step
    ineligible(kernel(None, 128, 128, 64, "kn", "bias"), Config(threads_y=8, virtual_m=1))  # 32-row tiles

    x = te.placeholder((64, 32), "float32", "x")
    w = te.placeholder((32, 64), "float32", "w")
    r = te.reduce_axis((0, 32), "k")
    mm = te.compute((64, 64), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="matmul")
    with pytest.raises(subgroup_matrix.Ineligible, match="float16"):
        subgroup_matrix.describe(te.create_prim_func([x, w, mm]))

    h = te.placeholder((64, 32), "float16", "h")
    v = te.placeholder((32, 64), "float16", "v")
    mm16 = te.compute((64, 64), lambda i, j: te.sum(h[i, r].astype("float32") * v[r, j].astype("float32"), axis=r),
                      name="matmul")
    gelu = te.compute((64, 64), lambda i, j: te.erf(mm16[i, j]), name="erf")
    with pytest.raises(subgroup_matrix.Ineligible, match="does not know"):
        subgroup_matrix.describe(te.create_prim_func([h, v, gelu]))


def test_split_wgsl_finds_every_kernel(built):
    funcs, _, wgsl = built
    assert sorted(wgsl) == sorted(f"{name}_kernel" for name in funcs)
    assert all(code.lstrip().startswith("enable f16;") for code in wgsl.values())

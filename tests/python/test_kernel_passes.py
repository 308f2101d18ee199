"""The passes that cut how many kernels there are and how long they take to compile: DeduplicateKernels (one
PrimFunc per distinct kernel, stages/lib/passes/deduplicate_kernels.py) and EagerConditions (non-short-circuit
conditions in GPU kernels, passes/eager_conditions.py). Whether the built models still compute what PyTorch
does is test_build_parity.py's and test_webgpu.py's question; here, what each pass does and does not do."""

from __future__ import annotations

import numpy as np
import pytest

from lib.passes.deduplicate_kernels import DeduplicateKernels, duplicates
from lib.passes.eager_conditions import EagerConditions


def _three_same_blocks():
    """h = relu(h w) three times, then h + x; each call names a PrimFunc of its own, alike but for their names (as
    FuseAttention and WinogradConv2d leave them after fusion: 214 such copies in SDXL's UNet)."""
    from tvm import relax, te, topi

    def prim_func(compute, tag=0):
        a, b = te.placeholder((4, 8), name="a"), te.placeholder((8, 8) if compute == "matmul_relu" else (4, 8), name="b")
        out = topi.nn.relu(topi.matmul(a, b)) if compute == "matmul_relu" else topi.add(a, b)
        # The tag keeps the BlockBuilder from merging the copies as they are added; it goes again below.
        return te.create_prim_func([a, b, out]).without_attr("global_symbol").with_attr("copy", tag)

    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    w = relax.Var("w", relax.TensorType((8, 8), "float32"))
    out_type = relax.TensorType((4, 8), "float32")
    builder = relax.BlockBuilder()
    with builder.function("main", [x, w]):
        with builder.dataflow():
            h = x
            for i, name in enumerate(["fused_matmul_relu", "fused_matmul1_relu1", "fused_matmul2_relu2"]):
                h = builder.emit(relax.call_tir(builder.add_func(prim_func("matmul_relu", i), name), (h, w), out_type))
            add = builder.add_func(prim_func("add"), "add")
            out = builder.emit_output(relax.call_tir(add, (h, x), out_type))
        builder.emit_func_output(out)
    mod = builder.get()
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            mod.update_func(gvar, func.without_attr("copy"))
    return mod


def _prim_funcs(mod) -> list[str]:
    import tvm

    return sorted(gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def test_identical_kernels_become_one_and_the_result_stays():
    import tvm
    from tvm import relax

    mod = _three_same_blocks()
    assert _prim_funcs(mod) == ["add", "fused_matmul1_relu1", "fused_matmul2_relu2", "fused_matmul_relu"]
    deduplicated = DeduplicateKernels(mod)
    # The copy whose name sorts first is kept.
    assert _prim_funcs(deduplicated) == ["add", "fused_matmul1_relu1"]
    # No call names a function that is gone.
    called = set()
    relax.analysis.post_order_visit(deduplicated["main"].body, lambda e: called.add(e.name_hint)
                                    if isinstance(e, tvm.ir.GlobalVar) else None)
    assert called == {"add", "fused_matmul1_relu1"}

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 8), dtype=np.float32), rng.standard_normal((8, 8), dtype=np.float32)
    outputs = [relax.VirtualMachine(relax.build(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy() for m in (mod, deduplicated)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    h = x
    for _ in range(3):
        h = np.maximum(h @ w, 0)
    np.testing.assert_allclose(outputs[1], h + x, rtol=1e-5)


def test_kernels_that_differ_in_shape_stay_apart():
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    y = relax.Var("y", relax.TensorType((4, 9), "float32"))
    with builder.function("main", [x, y]):
        with builder.dataflow():
            a = builder.emit(relax.op.nn.relu(x))
            b = builder.emit(relax.op.nn.relu(y))
            out = builder.emit_output(relax.Tuple([a, b]))
        builder.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(builder.get())
    assert duplicates(mod) == {}
    assert _prim_funcs(DeduplicateKernels(mod)) == _prim_funcs(mod)


@pytest.mark.parametrize("submodule", ["unet", "vae", "clip"])
def test_built_libraries_hold_each_kernel_once(tiny_build, submodule):
    """The tiny UNet had 263 PrimFuncs of which 187 differ; the build now keeps one of each."""
    import sys

    sys.path.insert(0, str(tiny_build.tree / "stages"))
    from lib.relax_io import load_module

    for path in (tiny_build.variant / submodule / "lowered.v1.json",
                 tiny_build.variant / submodule / "scheduled.webgpu.v1.json"):
        mod, _ = load_module(path, "make")
        assert _prim_funcs(mod), path
        assert duplicates(mod) == {}, f"{path}: {len(duplicates(mod))} duplicate kernels"


def _guarded_copy(gpu: bool = True):
    """b[i] = a[i] where 2 < i < n (the bounds of a padded tile load); c[i] = 1 where i < n or i > 7; and a
    guard that reads memory, a[i] > 0 after i < n, which must stay short-circuit. On one GPU thread per i, or
    in a loop (for the CPU)."""
    from tvm.script import tirx as T

    @T.prim_func
    def on_gpu(a: T.Buffer((256,), "float32"), b: T.Buffer((256,), "float32"), c: T.Buffer((256,), "float32"),
               n: T.int32):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for bx in T.thread_binding(4, thread="blockIdx.x"):
            for tx in T.thread_binding(64, thread="threadIdx.x"):
                b[bx * 64 + tx] = T.if_then_else(bx * 64 + tx < n and bx * 64 + tx > 2, a[bx * 64 + tx], T.float32(0))
                if bx * 64 + tx < n or bx * 64 + tx > 7:
                    c[bx * 64 + tx] = T.float32(1)
                if bx * 64 + tx < n and a[bx * 64 + tx] > T.float32(0):
                    c[bx * 64 + tx] = T.float32(2)

    @T.prim_func
    def on_cpu(a: T.Buffer((256,), "float32"), b: T.Buffer((256,), "float32"), c: T.Buffer((256,), "float32"),
               n: T.int32):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for i in range(256):
            b[i] = T.if_then_else(i < n and i > 2, a[i], T.float32(0))
            if i < n or i > 7:
                c[i] = T.float32(1)
            if i < n and a[i] > T.float32(0):
                c[i] = T.float32(2)

    return on_gpu if gpu else on_cpu


def test_eager_conditions_in_wgsl_but_guards_of_loads_stay():
    import tvm

    from lib.pipeline import tir_pipeline
    from lib.targets import target

    library = tvm.tirx.build(tvm.IRModule({"main": _guarded_copy()}), target=target("webgpu"),
                             pipeline=tir_pipeline())
    (wgsl,) = [m.inspect_source() for m in library.imports]
    conditions = [line.strip() for line in wgsl.splitlines() if line.strip().startswith("if (") and "podArgs.n" in line]
    assert len(conditions) == 3, wgsl
    eager = [c for c in conditions if " & " in c or " | " in c]
    assert len(eager) == 2 and not any("&&" in c or "||" in c for c in eager), conditions
    (guard,) = [c for c in conditions if "&&" in c]
    assert "a_ptr[" in guard


def test_eager_conditions_leave_the_cpu_result_unchanged():
    """The pass on the kernel, compiled for the CPU, against numpy."""
    import tvm

    kernel = EagerConditions(tvm.IRModule({"main": _guarded_copy(gpu=False)}))
    assert "&&" not in kernel.script() and " & " in kernel.script()
    built = tvm.tirx.build(kernel, target="llvm")
    rng = np.random.default_rng(1)
    a = rng.standard_normal(256).astype(np.float32)
    b, c = np.zeros(256, np.float32), np.zeros(256, np.float32)
    tensors = [tvm.runtime.tensor(v) for v in (a, b, c)]
    built["main"](*tensors, 100)
    i = np.arange(256)
    np.testing.assert_array_equal(tensors[1].numpy(), np.where((i < 100) & (i > 2), a, 0))
    expected_c = np.where((i < 100) | (i > 7), 1, 0).astype(np.float32)
    expected_c[(i < 100) & (a > 0)] = 2
    np.testing.assert_array_equal(tensors[2].numpy(), expected_c)

"""The passes that make a float16 library (stages/lib/pipeline.py phase "precision") on small Relax functions:
Float16Weights (which weights become float16 parameters) and FoldCasts (casts moved to their producers, float32
-> float16 -> float32 round trips dropped), compiled for the CPU against numpy. The whole models go through them
in test_build_parity.py."""

from __future__ import annotations

import numpy as np

from lib.passes.float16_weights import Float16Weights
from lib.passes.fold_casts import FoldCasts


def _compile(mod):
    import tvm
    from tvm import relax

    mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    return relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())


def _calls(mod, op_name: str) -> list:
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: found.append(e) if isinstance(e, relax.Call)
                                    and getattr(e.op, "name", None) == op_name else None)
    return found


def test_weights_become_float16_parameters_but_odd_sized_ones_and_inputs():
    """Two weights share a name (as lifted weights do): each is renamed, so the matmul weight becomes float16
    and the 3-element bias (an odd number of halves: no whole 4-byte words to upload) stays float32."""
    import tvm
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    w = relax.Var("lv1", relax.TensorType((8, 3), "float32"))
    b = relax.Var("lv1", relax.TensorType((3,), "float32"))
    with builder.function("main", [x, w, b], attrs={"num_input": 1}):
        with builder.dataflow():
            out = builder.emit_output(relax.op.add(builder.emit(relax.op.matmul(x, w)), b))
        builder.emit_func_output(out)
    mod = Float16Weights(builder.get())
    params = mod["main"].params
    assert [(p.name, str(p.ty.dtype)) for p in params] == [("x", "float32"), ("w0", "float16"), ("w1", "float32")]
    assert str(mod["main"].ret_ty.dtype) == "float32"
    (matmul,) = _calls(mod, "relax.matmul")
    assert str(matmul.attrs.out_dtype) == "float32"  # float16 operands, float32 accumulation

    rng = np.random.default_rng(0)
    xv, wv, bv = (rng.standard_normal(s).astype("float32") for s in ((4, 8), (8, 3), (3,)))
    vm = _compile(mod)
    out = vm["main"](*(tvm.runtime.tensor(a) for a in (xv, wv.astype("float16"), bv))).numpy()
    ref = xv.astype("float16").astype("float64") @ wv.astype("float16").astype("float64") + bv
    # The matmul's float32 result is rounded to float16 on its way to the add: half a float16 ulp at these sizes.
    np.testing.assert_allclose(out, ref, rtol=0, atol=4e-3)


def test_casts_move_through_layout_ops_and_round_trips_cancel():
    """matmul (float32 out) -> float16 -> reshape -> float32 -> softmax -> reshape -> float16, as
    ToMixedPrecision leaves attention: the scores stay float32 into softmax (no rounding, no cast kernels) and
    the last cast lands on softmax's output, before the reshape."""
    import tvm
    from tvm import relax

    builder = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((2, 6, 4), "float16"))
    k = relax.Var("k", relax.TensorType((2, 4, 6), "float16"))
    with builder.function("main", [q, k]):
        with builder.dataflow():
            scores = builder.emit(relax.op.matmul(q, k, out_dtype="float32"))
            half = builder.emit(relax.op.astype(scores, "float16"))
            shaped = builder.emit(relax.op.reshape(half, (1, 2, 6, 6)))
            probs = builder.emit(relax.op.nn.softmax(builder.emit(relax.op.astype(shaped, "float32")), axis=-1))
            flat = builder.emit(relax.op.reshape(builder.emit(relax.op.broadcast_to(probs, (1, 2, 6, 6))), (2, 6, 6)))
            out = builder.emit_output(relax.op.astype(flat, "float16"))
        builder.emit_func_output(out)
    before = builder.get()
    after = relax.transform.DeadCodeElimination()(FoldCasts(before))
    casts = _calls(after, "relax.astype")
    assert len(casts) == 1  # of softmax's output, in its shape, not the reshaped one
    assert [int(d) for d in casts[0].args[0].ty.shape] == [1, 2, 6, 6] and str(casts[0].args[0].ty.dtype) == "float32"
    (softmax,) = _calls(after, "relax.nn.softmax")
    assert str(softmax.args[0].ty.dtype) == "float32"
    assert str(after["main"].ret_ty.dtype) == "float16"

    rng = np.random.default_rng(1)
    qv, kv = rng.standard_normal((2, 6, 4)).astype("float16"), rng.standard_normal((2, 4, 6)).astype("float16")
    scores = qv.astype("float64") @ kv.astype("float64")
    exact = np.exp(scores - scores.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    args = [tvm.runtime.tensor(a) for a in (qv, kv)]
    ours, old = (_compile(m)["main"](*args).numpy().astype("float64") for m in (after, before))
    # Both end in float16; without the round trip the scores are not rounded on the way.
    assert np.abs(ours - exact).max() <= np.abs(old - exact).max() + 1e-12
    np.testing.assert_allclose(ours, exact, atol=1e-3)

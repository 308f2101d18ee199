"""FuseAttention: matmul -> softmax -> matmul becomes one attention kernel (stages/lib/attention.py).

The traced attention (stages/lib/submodules/__init__.py, plain_attention) reaches Relax as

    s = matmul(q, k_t)                        q (bh, n_q, d), k_t (bh, d, n_k); q already scaled
    p = softmax(reshape(s), axis=-1)          through reshapes (and casts in a float16 library)
    o = matmul(reshape(broadcast_to(p)), v)   v (bh, n_k, d)

and becomes `o = call_tir(attention, [q, k_t, v])`. The PrimFunc is the plain definition (the CPU library
compiles it as it is); it carries the attribute the GPU schedule rule looks for, and is opaque to FuseOps so
that nothing fuses into the kernel the rule puts in its place. Where the kernel is not the faster
(attention.worth_fusing: wide heads over many keys, the VAE's single 512-wide head) the three kernels stay.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .. import attention
from . import call_rewriting_pass, static_shape

# Layout ops and casts that sit between the three steps without changing what they compute.
PASS_THROUGH = ("relax.reshape", "relax.broadcast_to", "relax.astype")
# TVM's OpPatternKind kOpaque: FuseOps fuses nothing into or with the kernel.
OPAQUE = 8


def _producer(builder, expr):
    while isinstance(expr, relax.Var):
        bound = builder.lookup_binding(expr)
        if bound is None:
            return expr
        expr = bound
    return expr


def _through(builder, expr, op_name: str):
    """The call of `op_name` that made `expr`, looking through PASS_THROUGH ops; None if another op did."""
    expr = _producer(builder, expr)
    while isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        if expr.op.name == op_name:
            return expr
        if expr.op.name not in PASS_THROUGH:
            return None
        expr = _producer(builder, expr.args[0])
    return None


def _rewrite(builder, call):
    probs, v = call.args
    softmax = _through(builder, probs, "relax.nn.softmax")
    if softmax is None or int(softmax.attrs.axis) not in (-1, len(softmax.ty.shape) - 1):
        return None
    scores = _through(builder, softmax.args[0], "relax.matmul")
    if scores is None:
        return None
    q, k_t = scores.args
    shapes = [static_shape(x) for x in (q, k_t, v, call, probs)]
    if any(s is None or len(s) != 3 for s in shapes):
        return None
    (bh, n_q, d), (bh_k, d_k, n_k), (bh_v, n_v, d_v), out_shape, probs_shape = shapes
    if (bh_k, d_k) != (bh, d) or (bh_v, n_v, d_v) != (bh, n_k, d) or out_shape != [bh, n_q, d] \
            or probs_shape != [bh, n_q, n_k] or not attention.worth_fusing(n_q, n_k, d):
        return None
    dtypes = {str(x.ty.dtype) for x in (q, k_t, v)}
    if len(dtypes) != 1 or dtypes.pop() not in ("float32", "float16") or str(scores.ty.dtype) != "float32":
        return None
    fused = builder.call_te(attention.reference, q, k_t, v, str(call.ty.dtype), primfunc_name_hint="attention")
    kernel = fused.args[0]
    builder.update_func(kernel, builder.get()[kernel].with_attr("op_pattern", OPAQUE)
                          .with_attr(attention.KERNEL_ATTR, attention.KERNEL_NAME))
    return fused


FuseAttention = call_rewriting_pass("FuseAttention", "relax.matmul", _rewrite)

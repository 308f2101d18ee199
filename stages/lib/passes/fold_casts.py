"""FoldCasts: casts moved through layout ops to their producer, and float32 -> float16 -> float32 dropped.

ToMixedPrecision casts each op's output to where its consumer wants it, across reshapes, so attention's scores
(the UNet's largest tensors: 1 GiB in float32 at 4096 tokens) came out as

    s = matmul(q, k, out_dtype=float32); astype(s, float16); reshape; astype(.., float32); softmax;
    broadcast_to; reshape; astype(.., float16); matmul(p, v)

four passes over the scores where the float32 library has one: on an H100 the extra cast kernels took 25 ms of
a 99 ms float16 step. Here a cast of a layout op's output (reshape, permute_dims, an identity broadcast_to)
becomes the layout op of a cast of its input, so it meets its producer: a float32 -> float16 -> float32 pair
then cancels (which only removes a rounding), and the last cast fuses into softmax's final kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax import op

from . import rewrite_relax_functions

LAYOUT_OPS = ("relax.reshape", "relax.permute_dims", "relax.broadcast_to")


def _same_shape(a, b) -> bool:
    try:
        return [int(d) for d in a.ty.shape] == [int(d) for d in b.ty.shape]
    except TypeError:
        return False


@relax.expr_functor.mutator
class _CastFolder(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.astype = tvm.ir.Op.get("relax.astype")
        self.layout = [tvm.ir.Op.get(name) for name in LAYOUT_OPS]

    def _producer(self, expr):
        """The call that made `expr`, through the aliases (`a = b`) rewriting leaves behind."""
        while isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr

    def cast(self, value, dtype: str):
        """`value` as `dtype`, with the cast moved towards `value`'s producer."""
        if str(value.ty.dtype) == dtype:
            return value
        producer = self._producer(value)
        if isinstance(producer, relax.Call):
            if any(producer.op.same_as(o) for o in self.layout):
                source = producer.args[0]
                if not producer.op.same_as(self.layout[2]) or _same_shape(source, value):
                    moved = self.cast(source, dtype)
                    return self.builder_.emit(relax.Call(producer.op, [moved, *producer.args[1:]], producer.attrs))
            if producer.op.same_as(self.astype):
                source = producer.args[0]
                narrowing = str(source.ty.dtype) == dtype == "float32" and str(value.ty.dtype) == "float16"
                if narrowing:  # float32 -> float16 -> float32: keep the float32 value
                    return source
        return self.builder_.emit(op.astype(value, dtype))

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not call.op.same_as(self.astype):
            return call
        return self.cast(call.args[0], str(call.attrs.dtype))


@tvm.transform.module_pass(opt_level=0, name="FoldCasts")
def FoldCasts(mod, ctx):
    return rewrite_relax_functions(mod, _CastFolder)

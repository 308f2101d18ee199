"""CombineParallelMatmuls: products of one input with several weights become one product with the weights side by
side, in groups small enough for any WebGPU device.

An attention block computes q, k and v from the same normalised hidden states; every cross-attention block of the
UNet computes its keys and values from the same text embeddings (SD 1.5: 32 products of 154 rows, SDXL: 140). Each is
a thin product on its own (a few hundred workgroups, or fewer than the GPU has compute units) and a dispatch of its
own. Here each group becomes one product whose weight is the group's weights concatenated (weight-only work, which
the lift phase moves into the build-time parameter transform), followed by a split.

TVM has this pass (relax.transform.CombineParallelMatmul), but it combines every product of an input or none, and
its split is one kernel with an output buffer per product: SDXL's 140 text projections would be one 681 MB weight
and a kernel of 141 storage buffers, where WebGPU guarantees 8 per stage and 128 MiB per binding. So groups here are
consecutive products of one input within MAX_PRODUCTS and MAX_WEIGHT_BYTES, each of at least MIN_ROWS rows.

Products must be spelled alike to be found: the traced model reshapes the input once per product, so identical
expressions are merged first (EliminateCommonSubexpr). A product is `matmul(x, w)` or `matmul(x, permute_dims(w))`
of 2-D tensors, `w` a parameter of the function; biases stay where they are (elementwise, they fuse into what
follows the split).
"""

from __future__ import annotations

import itertools

import tvm
from tvm import relax
from tvm.relax import op

from . import rewrite_relax_functions, static_shape

# The split kernel binds the combined result and one buffer per product: within WebGPU's guaranteed 8 storage
# buffers per shader stage.
MAX_PRODUCTS = 7
# A combined weight stays a tensor any device binds whole (WebGPU's default maxStorageBufferBindingSize is 128 MiB),
# counted in float32 (a float16 library's is half).
MAX_WEIGHT_BYTES = 64 * 2**20

# A product of fewer rows than one GEMM tile (the resnets' time projections: 2 rows) reads its weight once, grouped
# or not; combining it would save a dispatch and add a split kernel.
MIN_ROWS = 64

_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


class _Product:
    """One `var = matmul(lhs, weight)`; `weight` rebuilds the right-hand side from the function's parameter."""

    def __init__(self, var, lhs, param, transposed: bool, out_dtype: str):
        self.var, self.lhs, self.param, self.transposed, self.out_dtype = var, lhs, param, transposed, out_dtype
        rows, cols = static_shape(param)
        self.columns = rows if transposed else cols
        self.bytes = rows * cols * tvm.runtime.DataType(param.ty.dtype).bits // 8

    def weight(self):
        return op.permute_dims(self.param, [1, 0]) if self.transposed else self.param


def _product(binding, bound, params) -> _Product | None:
    value = binding.value
    if not (isinstance(value, relax.Call) and value.op.same_as(_MATMUL) and isinstance(value.args[0], relax.Var)):
        return None
    lhs, rhs = value.args
    transposed = False
    if isinstance(rhs, relax.Var) and rhs in bound:
        call = bound[rhs]
        if not (isinstance(call, relax.Call) and call.op.same_as(_PERMUTE) and call.attrs.axes is not None
                and [int(a) for a in call.attrs.axes] == [1, 0]):
            return None
        rhs, transposed = call.args[0], True
    lhs_shape = static_shape(lhs) or []
    if rhs not in params or len(lhs_shape) != 2 or len(static_shape(rhs) or []) != 2 or lhs_shape[0] < MIN_ROWS:
        return None
    return _Product(binding.var, lhs, rhs, transposed, str(value.ty.dtype))


def _groups(products: list[_Product]) -> list[list[_Product]]:
    """Products of one input, in program order, dealt into consecutive groups within the limits."""
    groups = [[]]
    for product in products:
        group = groups[-1]
        if group and (len(group) == MAX_PRODUCTS or sum(p.bytes for p in group) + product.bytes > MAX_WEIGHT_BYTES):
            groups.append(group := [])
        if product.bytes <= MAX_WEIGHT_BYTES:
            group.append(product)
    return [g for g in groups if len(g) > 1]


@relax.expr_functor.mutator
class _Combine(relax.PyExprMutator):
    def visit_function_(self, func):
        self.params = set(func.params)
        return super().visit_function_(func)

    def visit_dataflow_block_(self, block):
        bound = {b.var: b.value for b in block.bindings}
        by_input: dict[tuple, list[_Product]] = {}
        for binding in block.bindings:
            product = _product(binding, bound, self.params)
            if product is not None:
                by_input.setdefault((product.lhs, product.out_dtype), []).append(product)
        # each product's var -> (its group, its place in it); a group's product is emitted at its first member
        self.place = {p.var: (g, i) for products in by_input.values() for g in _groups(products)
                      for i, p in enumerate(g)}
        self.split_of = {}
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding):
        place = getattr(self, "place", {}).get(binding.var)
        if place is None:
            return super().visit_var_binding_(binding)
        group, index = place
        key = id(group)
        if key not in self.split_of:
            emit = self.builder_.emit
            weight = emit(op.concat([emit(p.weight()) for p in group], axis=1))
            out = emit(op.matmul(self.visit_expr(group[0].lhs), weight, out_dtype=group[0].out_dtype))
            edges = list(itertools.accumulate(p.columns for p in group))[:-1]
            self.split_of[key] = emit(op.split(out, edges, axis=1))
        value = self.builder_.normalize(relax.TupleGetItem(self.split_of[key], index))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))


@tvm.transform.module_pass(opt_level=0, name="CombineParallelMatmuls")
def CombineParallelMatmuls(mod, ctx):
    mod = relax.transform.EliminateCommonSubexpr()(mod)
    mod = rewrite_relax_functions(mod, _Combine)
    return relax.transform.DeadCodeElimination()(mod)  # the weights' own transposes, now unused

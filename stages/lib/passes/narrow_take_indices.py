"""NarrowTakeIndices: constant int64 indices of `take` become int32.

PyTorch's integer indexing (`x[0]`) exports as `take(x, const(0, int64))`. WebGPU has no 64-bit integers,
and TVM's WebGPU code generator stops at the first int64 buffer ("do not support i64"). Loop indices are
narrowed by TVM itself; constant index tensors are data, so this pass narrows them when every value fits.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from . import rewrite_relax_functions


@relax.expr_functor.mutator
class _Narrow(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.take = tvm.ir.Op.get("relax.take")

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op.same_as(self.take) and isinstance(call.args[1], tvm.ir.expr.Constant):
            index = call.args[1].value.numpy()
            if index.dtype == np.int64 and np.all(np.abs(index) < 2**31):
                return relax.Call(call.op, [call.args[0], relax.const(index.astype(np.int32))], call.attrs)
        return call


@tvm.transform.module_pass(opt_level=0, name="NarrowTakeIndices")
def NarrowTakeIndices(mod, ctx):  # noqa: N802 (TVM pass naming)
    return rewrite_relax_functions(mod, _Narrow)

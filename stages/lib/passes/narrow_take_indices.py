"""NarrowTakeIndices: constant int64 indices of `take` become int32.

PyTorch's integer indexing (`x[0]`) exports as `take(x, const(0, int64))`. WebGPU has no 64-bit integers,
and TVM's WebGPU code generator stops at the first int64 buffer ("do not support i64"). Loop indices are
narrowed by TVM itself; constant index tensors are data, so this pass narrows them when every value fits.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from . import call_rewriting_pass


def _narrow(builder, call):
    if isinstance(call.args[1], tvm.ir.expr.Constant):
        index = call.args[1].value.numpy()
        if index.dtype == np.int64 and np.all(np.abs(index) < 2**31):
            return relax.Call(call.op, [call.args[0], relax.const(index.astype(np.int32))], call.attrs)
    return None


NarrowTakeIndices = call_rewriting_pass("NarrowTakeIndices", "relax.take", _narrow)

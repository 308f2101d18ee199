"""EagerConditions: `a && b` and `a || b` over side-effect-free operands become `a & b` and `a | b` in GPU kernels.

WGSL's && and || short-circuit, so each becomes a branch in SPIR-V. The bounds checks of a padded
convolution's input tile chain five comparisons per loaded value, with 8-16 loads per thread unrolled:
hundreds of nested branches in one kernel. SwiftShader, the CPU WebGPU of the tests and of machines without a
GPU, compiled the tiny UNet's first convolution in 5.8 s that way and in 0.5 s with the eager form (the whole
tiny SD 1.5 library: 54 s -> about 40 s per process). On a GPU both forms are the same predicated code.

Only operands that read no memory and call nothing are evaluated eagerly: a guard such as `i < n && a[i] > 0`
keeps its branch, so no load is issued that the guard was there to prevent.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

# tirx exposes these node classes only through their factory functions.
_LOAD = type(tirx.decl_buffer((1,), "float32")[0])
_CALL = type(tirx.call_extern("float32", "f"))


def _reads_or_calls(expr) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, lambda node: found.append(node) if isinstance(node, (_LOAD, _CALL)) else None)
    return bool(found)


def _eager(expr):
    if _reads_or_calls(expr.a) or _reads_or_calls(expr.b):
        return expr
    return tirx.bitwise_and(expr.a, expr.b) if isinstance(expr, tirx.And) else tirx.bitwise_or(expr.a, expr.b)


@tirx.transform.prim_func_pass(opt_level=0, name="EagerConditions")
def EagerConditions(func, mod, ctx):
    return tvm_ffi.structural_map(func, ((tirx.And, tirx.Or), _eager))

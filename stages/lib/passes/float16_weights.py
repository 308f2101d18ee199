"""Float16Weights: a float16 library's compute precision, TVM's ToMixedPrecision with float16 weights.

ToMixedPrecision casts the inputs of every matmul and convolution to float16 with float32 accumulation
(out_dtype), keeps reductions (norm statistics, softmax, sums) in float32 and lets elementwise ops follow
their inputs; the weights it is told about by name become float16 parameters, so the library takes the
shards' float16 values as they are, and the function's inputs and outputs stay float32 (both libraries of
a submodule have one interface). Two things it needs first, done here:

- Unique names. It picks those parameters by name, and the traced functions' lifted weights repeat names
  (`lv221` more than once), so every weight is renamed `w<position>` before it runs.
- Whole 4-byte words. WebGPU copies host data in multiples of 4 bytes (tvmjs refuses other sizes), so a
  weight with an odd number of elements (the VAE's 3-channel output bias) could not be uploaded as float16:
  such weights stay float32 parameters.

Weights that float32 ops then take (norm scales, CLIP's token table, which `take` gathers) are cast back by
ops on weights alone, which the pipeline's next lift moves into `<function>_prepare` (load time).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _elements(var) -> int:
    return int(np.prod([int(d) for d in var.ty.shape]))


def _renamed(func):
    """(func with its weights, the parameters after attribute num_input, renamed w0, w1, ...; their names
    that may become float16)."""
    num_inputs = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
    inputs, weights = list(func.params[:num_inputs]), list(func.params[num_inputs:])
    fresh = [relax.Var(f"w{i}", w.ty) for i, w in enumerate(weights)]
    bound = func.bind_params(dict(zip(weights, fresh)))
    renamed = relax.Function(inputs + fresh, bound.body, bound.ret_ty, func.is_pure, func.attrs, func.span)
    halves = [v.name for v in fresh if str(v.ty.dtype) == "float32" and _elements(v) % 2 == 0]
    return renamed, halves


@tvm.transform.module_pass(opt_level=0, name="Float16Weights")
def Float16Weights(mod, ctx):
    updated, halves = {}, []
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function) and func.attrs and "num_input" in func.attrs:
            updated[gvar], names = _renamed(func)
            halves += names
    for gvar, func in updated.items():
        mod[gvar] = func
    return relax.transform.ToMixedPrecision(out_dtype="float32", fp16_input_names=halves)(mod)

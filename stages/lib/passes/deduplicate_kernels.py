"""DeduplicateKernels: PrimFuncs that are structurally the same become one, and every call uses it.

Fusion gives each call site its own PrimFunc, so a model built from repeated blocks carries many copies of
one kernel under different names: full-size SDXL's UNet had 419 PrimFuncs of which 205 differ (60 copies of
one attention kernel), SD 1.5's 398 of 283. Every copy is scheduled, compiled to WGSL and made into a
compute pipeline at load: on a GPU that is cold-start time, on a CPU adapter (SwiftShader, the tests)
most of the run. Names are not part of the comparison; the copy whose name sorts first is kept, so the
output does not depend on the order of the module's functions.
"""

from __future__ import annotations

import tvm
from tvm import relax

from . import rewrite_relax_functions


def duplicates(mod) -> dict:
    """{GlobalVar of a duplicate PrimFunc: GlobalVar of the one kept}."""
    import tvm_ffi

    kept: dict[int, list] = {}
    remap = {}
    for gvar, func in sorted(mod.functions_items(), key=lambda item: item[0].name_hint):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        body = func.without_attr("global_symbol")
        same_hash = kept.setdefault(tvm_ffi.structural_hash(body), [])
        match = next((g for g, b in same_hash if tvm_ffi.structural_equal(b, body)), None)
        if match is None:
            same_hash.append((gvar, body))
        else:
            remap[gvar] = match
    return remap


@tvm.transform.module_pass(opt_level=0, name="DeduplicateKernels")
def DeduplicateKernels(mod, ctx):
    remap = duplicates(mod)
    if not remap:
        return mod

    @relax.expr_functor.mutator
    class _Redirect(relax.PyExprMutator):
        def visit_global_var_(self, gvar):
            return remap.get(gvar, gvar)

    mod = rewrite_relax_functions(mod, _Redirect)
    return tvm.IRModule({g: f for g, f in mod.functions_items() if g not in remap}, attrs=mod.attrs)

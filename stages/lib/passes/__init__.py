"""Project-owned Relax passes, one per file, each named for what it rewrites; listed in lib/pipeline.py."""

from __future__ import annotations


def rewrite_relax_functions(mod, mutator_class):
    """Runs a PyExprMutator over every Relax function of `mod` and returns the rewritten module."""
    from tvm import relax

    mutator = mutator_class(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()

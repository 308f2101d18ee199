"""Project-owned passes (Relax, and TIR for GPU kernels), one per file, each named for what it rewrites; listed in
lib/pipeline.py."""

from __future__ import annotations


def call_rewriting_pass(name: str, op_name: str, rewrite):
    """A module pass that replaces each call of the Relax op `op_name`, in every Relax function, by
    `rewrite(builder, call)` (expressions it needs bound first go through `builder.emit`), or keeps the call
    where that returns None. The call's arguments are rewritten first."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.op = tvm.ir.Op.get(op_name)

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(self.op):
                return call
            rewritten = rewrite(self.builder_, call)
            return call if rewritten is None else rewritten

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, ctx):
        return rewrite_relax_functions(mod, _Rewriter)

    return _pass


def rewrite_relax_functions(mod, mutator_class):
    """Runs a PyExprMutator over every Relax function of `mod` and returns the rewritten module."""
    from tvm import relax

    mutator = mutator_class(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


def static_shape(expr) -> list[int] | None:
    """The shape of a Relax expression as ints; None where it is symbolic or unknown."""
    try:
        return [int(d) for d in expr.ty.shape]
    except (TypeError, AttributeError):
        return None

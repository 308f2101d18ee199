"""CombineParallelMatmuls (stages/lib/passes/combine_parallel_matmuls.py): products of one input with several
weights become fewer, wider products, in groups within WebGPU's guaranteed binding count and a weight-size cap;
the function computes what it did. The built models' parity with PyTorch is test_build_parity.py's and
test_webgpu.py's question."""

from __future__ import annotations

import numpy as np
import pytest

from lib.passes import combine_parallel_matmuls as combine


def _thin_products(widths, rows=combine.MIN_ROWS, depth=16, shared_input=True):
    """main(x, w_0, ..., w_n) -> tuple of matmul(reshape(x), permute_dims(w_i)), spelled as the traced models spell
    a linear layer: each product reshapes its input itself."""
    from tvm import relax
    from tvm.relax import op

    x = relax.Var("x", relax.TensorType((2, rows // 2, depth), "float32"))
    weights = [relax.Var(f"w_{i}", relax.TensorType((width, depth), "float32")) for i, width in enumerate(widths)]
    builder = relax.BlockBuilder()
    with builder.function("main", [x, *weights]):
        with builder.dataflow():
            outs = []
            flat = builder.emit(op.reshape(x, (rows, depth)))
            for w in weights:
                lhs = builder.emit(op.reshape(x, (rows, depth))) if not shared_input else flat
                outs.append(builder.emit(op.matmul(lhs, builder.emit(op.permute_dims(w, [1, 0])))))
            result = builder.emit_output(relax.Tuple(outs))
        builder.emit_func_output(result)
    return builder.get()


def _calls(mod, name: str) -> list:
    import tvm
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) and e.op.name == name else None)
    return found


def _run(mod, inputs):
    import tvm
    from tvm import relax

    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return [t.numpy() for t in vm["main"](*[tvm.runtime.tensor(a) for a in inputs])]


@pytest.mark.parametrize("shared_input", [True, False], ids=["one-reshape", "a-reshape-per-product"])
def test_products_of_one_input_are_combined_within_the_limits(monkeypatch, shared_input):
    widths = [8] * 9 + [24, 16, 8, 8, 8, 8, 8, 8, 8, 40]  # 19 products: more than one group by count and by bytes
    monkeypatch.setattr(combine, "MAX_WEIGHT_BYTES", 96 * 16 * 4)  # at most 96 output columns of 16 x float32
    mod = _thin_products(widths, shared_input=shared_input)
    combined = combine.CombineParallelMatmuls(mod)

    # Consecutive groups: 7 products (the count limit), 7 (80 columns; the 40 would pass 96), the last 5.
    assert len(_calls(mod, "relax.matmul")) == 19
    assert [int(m.ty.shape[-1]) for m in _calls(combined, "relax.matmul")] == [56, 80, 72]
    assert [len(s.ty.fields) for s in _calls(combined, "relax.split")] == [7, 7, 5]

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, combine.MIN_ROWS // 2, 16), dtype=np.float32)]
    inputs += [rng.standard_normal((w, 16), dtype=np.float32) for w in widths]
    for before, after in zip(_run(mod, inputs), _run(combined, inputs), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_lone_product_one_over_the_cap_and_few_rows_stay_as_they_are(monkeypatch):
    monkeypatch.setattr(combine, "MAX_WEIGHT_BYTES", 32 * 16 * 4)
    # a lone product; one whose 64 columns alone are over the cap; products of fewer rows than a GEMM tile
    for widths, rows in (([8], 64), ([8, 64], 64), ([8, 8, 8], 2)):
        mod = _thin_products(widths, rows=rows)
        combined = combine.CombineParallelMatmuls(mod)
        assert len(_calls(combined, "relax.matmul")) == len(widths)
        assert _calls(combined, "relax.split") == []

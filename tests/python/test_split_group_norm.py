"""SplitGroupNorm (stages/lib/passes/split_group_norm.py): group norms over enough values become two-stage
reductions plus elementwise work, for the resnets' (n, c, h, w) and the attention blocks' (n, c, h * w) alike, and
compute what R.nn.group_norm does. Whole models: test_build_parity.py, test_webgpu.py."""

from __future__ import annotations

import numpy as np
import pytest

from lib.passes.split_group_norm import MIN_GROUP_SIZE, SplitGroupNorm


def _group_norm(shape, groups):
    from tvm import relax
    from tvm.relax import op

    x = relax.Var("x", relax.TensorType(shape, "float32"))
    gamma = relax.Var("gamma", relax.TensorType((shape[1],), "float32"))
    beta = relax.Var("beta", relax.TensorType((shape[1],), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x, gamma, beta]):
        with builder.dataflow():
            out = builder.emit_output(op.nn.group_norm(x, gamma, beta, groups, channel_axis=1,
                                                       axes=list(range(2, len(shape)))))
        builder.emit_func_output(out)
    return builder.get()


def _ops(mod) -> set[str]:
    import tvm
    from tvm import relax

    names = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: names.add(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    return names


def _run(mod, inputs):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


@pytest.mark.parametrize("shape", [(2, 16, 32, 32), (1, 16, 1024)], ids=["resnet-nchw", "attention-ncl"])
def test_large_groups_are_split_and_compute_the_same(shape):
    groups = 4
    assert shape[1] // groups * int(np.prod(shape[2:])) >= MIN_GROUP_SIZE
    mod = _group_norm(shape, groups)
    split = SplitGroupNorm(mod)
    assert "relax.nn.group_norm" in _ops(mod) and "relax.nn.group_norm" not in _ops(split)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape, dtype=np.float32) * 3 + 1, rng.standard_normal(shape[1], dtype=np.float32),
              rng.standard_normal(shape[1], dtype=np.float32)]
    np.testing.assert_allclose(_run(split, inputs), _run(mod, inputs), rtol=1e-4, atol=1e-4)


def test_small_groups_stay_one_kernel():
    mod = SplitGroupNorm(_group_norm((1, 8, 64), 4))  # groups of 128 values
    assert "relax.nn.group_norm" in _ops(mod)

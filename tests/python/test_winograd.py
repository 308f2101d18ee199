"""The WinogradConv2d pass: rewritten convolutions compiled for the CPU against PyTorch's direct convolution,
for both tile sizes, with and without padding, sizes the tiles do not divide, and a fused epilogue; and the
convolutions it must leave alone. (The whole models go through it in test_build_parity.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.passes.winograd_conv2d import WinogradConv2d


def _conv_module(data_shape, weight_shape, **conv_attrs):
    from tvm import relax

    builder = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType(data_shape, "float32"))
    weight = relax.Var("weight", relax.TensorType(weight_shape, "float32"))
    bias = relax.Var("bias", relax.TensorType((1, weight_shape[0], 1, 1), "float32"))
    with builder.function("main", [data, weight, bias]):
        with builder.dataflow():
            conv = builder.emit(relax.op.nn.conv2d(data, weight, **conv_attrs))
            out = builder.emit_output(relax.op.add(conv, bias))
        builder.emit_func_output(out)
    return builder.get()


def _kernel_names(mod):
    from tvm import tirx

    return sorted(gv.name_hint for gv, func in mod.functions_items() if isinstance(func, tirx.PrimFunc))


def _compile(mod):
    import tvm
    from tvm import relax

    passes = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(),
              relax.transform.FuseTIR()]
    mod = tvm.transform.Sequential(passes)(mod)
    return mod, relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())


@pytest.mark.parametrize("n, ci, co, size, padding, tile", [
    (2, 16, 24, (8, 8), 1, 2),      # 8 tiles of 4 x 4 are too few: m = 2
    (1, 32, 16, (48, 44), 1, 4),    # 12 x 11 tiles of 4 x 4: m = 4
    (2, 16, 16, (7, 9), 1, 2),      # tiles the size does not divide
    (1, 16, 16, (10, 10), 0, 2),    # no padding: 8 x 8 out
])
def test_rewritten_convolution_matches_pytorch(n, ci, co, size, padding, tile):
    import tvm

    mod = WinogradConv2d(_conv_module((n, ci, *size), (co, ci, 3, 3), padding=padding))
    assert f"winograd{tile}_gemm" in _kernel_names(mod)
    compiled, vm = _compile(mod)
    assert any("winograd" in name and "add" in name for name in _kernel_names(compiled)), "bias add not fused"

    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, ci, *size)).astype("float32")
    weight = (rng.standard_normal((co, ci, 3, 3)) / np.sqrt(ci * 9)).astype("float32")
    bias = rng.standard_normal((1, co, 1, 1)).astype("float32")
    out = vm["main"](*(tvm.runtime.tensor(a) for a in (data, weight, bias))).numpy()
    reference = torch.nn.functional.conv2d(torch.from_numpy(data).double(), torch.from_numpy(weight).double(),
                                           padding=padding).numpy() + bias
    assert out.shape == reference.shape
    # float32 direct convolution is ~3e-7 here; F(4 x 4, 3 x 3) measured up to 4e-6 at 320 channels.
    assert np.abs(out - reference).max() / np.abs(reference).max() < 2e-5


@pytest.mark.parametrize("data_shape, weight_shape, attrs", [
    ((1, 16, 8, 8), (16, 16, 3, 3), dict(padding=1, strides=2)),   # strided (SD's downsamplers)
    ((1, 16, 8, 8), (16, 16, 1, 1), dict()),                        # 1 x 1
    ((1, 4, 8, 8), (32, 4, 3, 3), dict(padding=1)),                 # conv_in: 4 input channels
    ((1, 32, 8, 8), (3, 32, 3, 3), dict(padding=1)),                # conv_out: 3 output channels
    # SDXL's VAE at 1024 x 1024: a 2.25 GiB transformed input, beyond what WebGPU binds (MAX_TRANSFORMED_BYTES)
    ((1, 256, 1024, 1024), (128, 256, 3, 3), dict(padding=1)),
])
def test_other_convolutions_are_left_direct(data_shape, weight_shape, attrs):
    mod = _conv_module(data_shape, weight_shape, **attrs)
    assert not any("winograd" in name for name in _kernel_names(WinogradConv2d(mod)))


def test_the_largest_convolution_under_the_size_cap_is_rewritten():
    # SDXL's VAE, 128 channels at 1024 x 1024: 36 x 65536 tiles x 128 x 4 bytes = 1.125 GiB, over the cap;
    # 64 channels there (0.56 GiB) are still rewritten.
    assert not any("winograd" in n for n in _kernel_names(WinogradConv2d(_conv_module((1, 128, 1024, 1024), (128, 128, 3, 3), padding=1))))
    assert any("winograd" in n for n in _kernel_names(WinogradConv2d(_conv_module((1, 64, 1024, 1024), (64, 64, 3, 3), padding=1))))


def test_transforms_do_not_absorb_what_comes_before_them():
    """SiLU before a conv and an upsampling between two stay kernels of their own (fused into the input
    transform they would be recomputed for each of the 16-36 values it reads); the bias add fuses after."""
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 32, 32), "float32"))
    w1, w2 = (relax.Var(name, relax.TensorType((32, 32, 3, 3), "float32")) for name in ("w1", "w2"))
    bias = relax.Var("bias", relax.TensorType((1, 32, 1, 1), "float32"))
    with builder.function("main", [x, w1, w2, bias]):
        with builder.dataflow():
            y = builder.emit(relax.op.nn.conv2d(builder.emit(relax.op.sigmoid(x)), w1, padding=1))
            y = builder.emit(relax.op.image.resize2d(builder.emit(relax.op.add(y, bias)), (64, 64),
                                                     method="nearest_neighbor"))
            out = builder.emit_output(relax.op.add(builder.emit(relax.op.nn.conv2d(y, w2, padding=1)), bias))
        builder.emit_func_output(out)
    mod, _ = _compile(WinogradConv2d(builder.get()))
    names = _kernel_names(mod)
    assert "tir_sigmoid" in names and "resize2d" in names, names
    assert [n for n in names if n.startswith("fused_")] == ["fused_winograd2_output_add", "fused_winograd4_output_add1"]

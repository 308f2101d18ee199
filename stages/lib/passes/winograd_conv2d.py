"""WinogradConv2d: 3 x 3 stride-1 convolutions as Winograd F(m x m, 3 x 3), one batched GEMM between transforms.

Direct 3 x 3 convolutions were 60% of the UNet's GPU time on an H100 (888 GFLOP per step at 8.7 TFLOP/s)
and nearly all of the VAE's. Winograd's algorithm computes an m x m output tile from an (m+2) x (m+2)
input tile with (m+2)^2 multiplies per channel pair instead of 9 m^2: 4x fewer for m = 4, 2.25x for m = 2.
Each convolution becomes four kernels:

    weights  U[e, co, ci] = (G g G^T)[e]        depends on the weights only: lifted to load time (below)
    input    V[e, p, ci]  = (B^T d B)[e]        p = (batch, tile row, tile column)
    GEMM     M[e, p, co]  = sum_ci V[e, p, ci] U[e, co, ci]   (a batched matmul: dlight / tuning log schedule it)
    output   y[n, co, h, w] = (A^T M A)[h % m, w % m]         elementwise ops after the conv fuse into this one

This pass runs after the build-time LiftTransformParams on purpose: lifted there, dump-params would store U,
(m+2)^2 / 9 times the weights (4x for m = 4), in the download. The pipeline's next lift moves the weight
transforms into `<function>_prepare`, which the runtime runs once after loading the weights; per call they
took 13 ms of a 139 ms UNet step on an H100.

m = 4 where there are enough tiles to fill the GPU (N * tiles >= MIN_TILES_FOR_4), else m = 2, which keeps
the transformed weights smaller (16/9 instead of 36/9 of the weights) where the GEMM is weight-bound (the
UNet's 16 x 16 and 8 x 8 levels). The transform matrices come from TVM's own Cook-Toom construction
(topi.nn.winograd_util, interpolation points 0, +-1, +-1/2, -2); in float32 they add about 1e-6 relative
error to the UNet output (tests/python/test_build_parity.py holds the compiled model to PyTorch).

Coefficients are compile-time constants; where an index (e or h % m) is a run-time value, a coefficient is
a short select chain over it, so no thread branches and no transform matrix is read from memory.
"""

from __future__ import annotations

from tvm import te, tirx

from . import call_rewriting_pass

KERNEL = 3
# Channels below this (SD's conv_in with 4 latent channels, conv_out with 3 or 4) keep the direct form:
# their GEMMs would be too thin to gain.
MIN_CHANNELS = 16
# Output tiles (over the batch) from which m = 4 is used: enough 4 x 4 tiles to give the GEMM rows.
MIN_TILES_FOR_4 = 128
# The largest transformed input or GEMM product a convolution may have; larger ones keep the direct form. Both
# are (m+2)^2 / m^2 times the conv's own input or output (2.25x for m = 4): SDXL's VAE at 1024 x 1024 would
# need 2.25 GiB for its 256-channel convolutions, beyond the 2 GiB that WebGPU adapters bind at most (Dawn on
# NVIDIA: 2048 MB). 1 GiB is the size of the largest activation SDXL's VAE has anyway (256 x 1024 x 1024 float32).
MAX_TRANSFORMED_BYTES = 1 << 30
# The transforms and the GEMM's accumulator compute in float32; the transformed weights and inputs are stored
# in the conv's input dtype (float16 halves their traffic in the float16 library; its Winograd F(4) error
# stays within the float16 library's tolerance, tests/python/test_build_parity.py).
ARITHMETIC = "float32"
STORAGE = ("float32", "float16")
# TVM's OpPatternKind value kOutEWiseFusable (what convolutions and matmuls are).
OUT_ELEMWISE_FUSABLE = 4


def transform_matrices(m: int):
    """(A, B, G) of F(m x m, 3 x 3) as float64 numpy arrays: y = A^T [(G g G^T) * (B^T d B)] A."""
    from tvm.topi.nn import winograd_util  # TVM's Cook-Toom construction (private helpers, pinned TVM)

    points = winograd_util._interpolation_points(m + KERNEL - 1)
    return winograd_util._cook_toom_convolution(points, m, KERNEL)


def _coefficient(column, index):
    """`column[index]` for a run-time `index`, as a select chain over the few constant values."""
    values = [float(v) for v in column]
    expr = tirx.const(values[-1], ARITHMETIC)
    if all(v == values[0] for v in values):
        return tirx.const(values[0], ARITHMETIC)
    for position in range(len(values) - 2, -1, -1):
        expr = tirx.Select(index == position, tirx.const(values[position], ARITHMETIC), expr)
    return expr


def _weighted_sum(terms):
    """Sum of (coefficient, value) pairs, leaving out constant zero coefficients."""
    total = None
    for coefficient, value in terms:
        if isinstance(coefficient, tirx.FloatImm) and coefficient.value == 0.0:
            continue
        term = value if isinstance(coefficient, tirx.FloatImm) and coefficient.value == 1.0 else coefficient * value
        total = term if total is None else total + term
    return total if total is not None else tirx.const(0.0, ARITHMETIC)


def _separable(matrix, row_index, col_index, load):
    """sum_{a,b} matrix[a, row_index] * matrix[b, col_index] * load(a, b), summed over b first."""
    size = matrix.shape[0]
    return _weighted_sum(
        (_coefficient(matrix[a, :], row_index),
         _weighted_sum((_coefficient(matrix[b, :], col_index), load(a, b)) for b in range(size)))
        for a in range(size))


def weight_transform(weight, m: int):
    g_matrix = transform_matrices(m)[2]  # (alpha, 3)
    alpha = m + KERNEL - 1
    co, ci = (int(d) for d in weight.shape[:2])

    def compute(e, o, i):
        eps, nu = e // alpha, e % alpha
        return _separable(g_matrix.T, eps, nu, lambda k, l: weight[o, i, k, l].astype(ARITHMETIC)).astype(weight.dtype)

    return te.compute((alpha * alpha, co, ci), compute, name="winograd_weight")


def input_transform(data, m: int, pad: int, out_hw):
    b_matrix = transform_matrices(m)[1]  # (alpha, alpha)
    alpha = m + KERNEL - 1
    n, ci, h, w = (int(d) for d in data.shape)
    tiles_h, tiles_w = (-(-extent // m) for extent in out_hw)

    def compute(e, p, c):
        eps, nu = e // alpha, e % alpha
        batch, tile = p // (tiles_h * tiles_w), p % (tiles_h * tiles_w)
        row0, col0 = tile // tiles_w * m - pad, tile % tiles_w * m - pad

        def load(a, b):
            row, col = row0 + a, col0 + b
            inside = tirx.all(row >= 0, row < h, col >= 0, col < w)
            return tirx.if_then_else(inside, data[batch, c, row, col].astype(ARITHMETIC), tirx.const(0.0, ARITHMETIC))

        return _separable(b_matrix, eps, nu, load).astype(data.dtype)

    return te.compute((alpha * alpha, n * tiles_h * tiles_w, ci), compute, name="winograd_input")


def batched_gemm(v, u, accumulate: str):
    alpha2, tiles, ci = (int(d) for d in v.shape)
    co = int(u.shape[1])
    k = te.reduce_axis((0, ci), name="k")
    return te.compute((alpha2, tiles, co),
                      lambda e, p, o: te.sum(v[e, p, k].astype(accumulate) * u[e, o, k].astype(accumulate), axis=k),
                      name="winograd_gemm")


def output_transform(product, m: int, out_shape):
    a_matrix = transform_matrices(m)[0]  # (alpha, m)
    alpha = m + KERNEL - 1
    n, co, h, w = out_shape
    tiles_h, tiles_w = -(-h // m), -(-w // m)

    def compute(b, o, y, x):
        p = (b * tiles_h + y // m) * tiles_w + x // m
        return _separable(a_matrix, y % m, x % m, lambda eps, nu: product[eps * alpha + nu, p, o])

    return te.compute((n, co, h, w), compute, name="winograd_output")


def tile_size(shape) -> int:
    n, _, h, w = shape
    return 4 if n * -(-h // 4) * -(-w // 4) >= MIN_TILES_FOR_4 else 2


def _rewrite(builder, call):
    data, weight = call.args
    attrs = call.attrs
    # out_dtype: the accumulator's dtype (float32 for ToMixedPrecision's float16 convs); unset means the input's.
    out_dtype = "" if attrs.out_dtype is None else str(attrs.out_dtype)
    accumulate = out_dtype if out_dtype not in ("", "void") else str(data.ty.dtype)
    if (str(data.ty.dtype) not in STORAGE or str(weight.ty.dtype) != str(data.ty.dtype) or accumulate != ARITHMETIC
            or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
            or attrs.out_layout != "NCHW" or int(attrs.groups) != 1
            or [int(s) for s in attrs.strides] != [1, 1] or [int(d) for d in attrs.dilation] != [1, 1]):
        return None
    try:
        shape = [int(d) for d in data.ty.shape]
        co, ci, kh, kw = (int(d) for d in weight.ty.shape)
    except TypeError:  # symbolic shapes: keep the direct form
        return None
    padding = [int(p) for p in attrs.padding]
    if (kh, kw) != (KERNEL, KERNEL) or len(set(padding)) != 1 or padding[0] > KERNEL - 1:
        return None
    if ci < MIN_CHANNELS or co < MIN_CHANNELS:
        return None
    n, _, h, w = shape
    pad = padding[0]
    out_shape = (n, co, h + 2 * pad - KERNEL + 1, w + 2 * pad - KERNEL + 1)
    m = tile_size(out_shape)
    tiles = n * -(-out_shape[2] // m) * -(-out_shape[3] // m)
    transformed = (m + 2) ** 2 * tiles * ci * (2 if str(data.ty.dtype) == "float16" else 4)
    product = (m + 2) ** 2 * tiles * co * 4  # accumulated in float32
    if max(transformed, product) > MAX_TRANSFORMED_BYTES:
        return None
    u = builder.emit(_transform(builder, weight_transform, weight, m, name=f"winograd{m}_weight"))
    v = builder.emit(_transform(builder, input_transform, data, m, pad, out_shape[2:], name=f"winograd{m}_input"))
    product = builder.emit_te(batched_gemm, v, u, accumulate, primfunc_name_hint=f"winograd{m}_gemm")
    return _transform(builder, output_transform, product, m, out_shape, name=f"winograd{m}_output")


def _transform(builder, te_func, *args, name):
    """A call to a transform kernel that FuseOps treats like a convolution ("out-elementwise fusable"):
    elementwise ops after it fuse into it (the conv's bias, residual and scale, after the output
    transform), nothing before it does. As the injective kernels they are, each would absorb its
    producers (group norm, SiLU, upsampling) and repeat them for every one of the 16 to 36 values it
    reads, which made the VAE three times slower."""
    call = builder.call_te(te_func, *args, primfunc_name_hint=name)
    kernel = call.args[0]
    builder.update_func(kernel, builder.get()[kernel].with_attr("op_pattern", OUT_ELEMWISE_FUSABLE))
    return call


WinogradConv2d = call_rewriting_pass("WinogradConv2d", "relax.nn.conv2d", _rewrite)

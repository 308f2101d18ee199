"""Default GPU schedule rules for kernels without a tuning record: this project's rules where they apply, TVM's
dlight for the rest, with WebGPU settings.

Large products (LARGE_PRODUCT multiply-adds and up: every heavy matmul and convolution of a full-size model)
get the GEMM template of stages/lib/gemm.py, with the tile its shape calls for. Where the template declines a
kernel, dlight's Matmul rule takes it, with the CUDA tiles (8 x 16 threads, 32 x 64 tiles, K step 16), which
fit within WebGPU's default limits: dlight has no WebGPU configuration, and with its generic one (8 x 8
threads, 32 x 32 tiles) a UNet step took 470 ms on an H100, against 206 with these (bench/results/).

Small products keep dlight's generic tiles: big tiles gain nothing there, and SwiftShader, the CPU WebGPU that
tests and machines without a GPU use, did not finish compiling the tiny model's kernels with dlight's big ones
(minutes per kernel, memory past 18 GB), while the generic tiles compile in seconds.
"""

from __future__ import annotations

LARGE_PRODUCT = 1 << 28


def _multiply_adds(sch, block) -> int:
    """Product of a reduction block's iteration extents (M * N * K for a matmul, the MACs of a conv)."""
    total = 1
    for iter_var in sch.get(block).iter_vars:
        extent = iter_var.dom.extent
        total *= int(extent) if hasattr(extent, "value") or isinstance(extent, int) else 1 << 20
    return total


def default_rules():
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.analysis.common_analysis import get_root_block
    from tvm.s_tir.dlight.gpu.matmul import get_reduction_blocks

    from . import gemm

    WinogradTransforms = _winograd_transforms_rule()
    Attention = _attention_rule()

    class Matmul(dl.gpu.Matmul):
        large = False

        def apply(self, func, target, tunable):
            self.large = False
            if isinstance(func, tirx.PrimFunc):
                try:
                    sch = s_tir.Schedule(func)
                    blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
                    self.large = bool(blocks) and _multiply_adds(sch, blocks[0]) >= LARGE_PRODUCT
                except Exception:  # not a matmul-like function; the base rule declines it too
                    self.large = False
            if self.large and target.kind.name == "webgpu" and self.is_target_available(target):
                try:
                    sch = gemm.schedule(func)
                except Exception:  # noqa: BLE001 - a form the template's primitives refuse: dlight's below
                    sch = None
                if sch is not None:
                    return sch
            return super().apply(func, target, tunable)

        def get_configs(self, target):
            if target.kind.name == "webgpu" and self.large:
                return dl.gpu.Matmul.Config(
                    block_size_x=8, block_size_y=16, vthread_x=1, vthread_y=1, micro_size_x=4, micro_size_y=4,
                    micro_size_k=16, vector_size=1, unroll=256, use_shared=True, storage_align=True, inner_x=False)
            return super().get_configs(target)

    return [Attention(), WinogradTransforms(), Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
            dl.gpu.Fallback()]


THREADS = 128


def _attention_rule():
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    from . import attention

    class Attention(GPUScheduleRule):
        """The attention PrimFunc of passes/fuse_attention.py becomes the hand-scheduled kernel of
        stages/lib/attention.py (same parameters)."""

        def apply(self, func, target, _):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            if not attention.is_attention(func):
                return None
            return s_tir.Schedule(attention.kernel_for(func))

    return Attention


def _winograd_transforms_rule():
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis.common_analysis import get_root_block
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    class WinogradTransforms(GPUScheduleRule):
        """The Winograd input and output transforms (stages/lib/passes/winograd_conv2d.py), one thread per
        tile and channel. Each value a tile reads is shared by all 16-36 values it writes; dlight's generic
        rule gives every written value a thread of its own, which rereads the whole tile (the input
        transform took 21 ms of a 124 ms UNet step). Here the per-tile loops are unrolled inside the thread,
        so the run-time coefficient selects fold to constants and the tile's loads are shared. Threads run
        along the channels: the input transform's writes and the output transform's reads are contiguous."""

        def apply(self, func, target, _):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            blocks = sch.get_child_blocks(get_root_block(sch))
            names = [sch.get(b).name_hint for b in blocks]
            if names == ["winograd_input"]:
                tile_loop, channel_loop = self._input(sch, blocks[0])
            elif names and names[0] == "winograd_output":
                found = self._output(sch, blocks)
                if found is None:
                    return None
                tile_loop, channel_loop = found
            else:
                return None
            block_x, thread_x = sch.split(sch.fuse(tile_loop, channel_loop), [None, THREADS])
            sch.bind(block_x, "blockIdx.x")
            sch.bind(thread_x, "threadIdx.x")
            return sch

        @staticmethod
        def _input(sch, block):
            element, tile, channel = sch.get_loops(block)  # V[e, p, ci]
            sch.reorder(tile, channel, element)
            sch.unroll(element)
            return tile, channel

        @staticmethod
        def _output(sch, blocks):
            product = sch.get(blocks[0]).reads[0].source  # M[alpha * alpha, p, co]
            m = int(round(int(product.shape[0]) ** 0.5)) - 2
            out_shape = [int(d) for d in sch.get(blocks[0]).writes[0].source.shape]
            last = blocks[-1]
            if [int(d) for d in sch.get(last).writes[0].source.shape] != out_shape or len(out_shape) != 4:
                return None  # the epilogue reshapes: leave it to the generic rule
            for block in blocks[:-1]:
                sch.compute_inline(block)
            batch, channel, row, col = sch.get_loops(last)
            tile_row, in_row = sch.split(row, [None, m])
            tile_col, in_col = sch.split(col, [None, m])
            sch.reorder(batch, tile_row, tile_col, channel, in_row, in_col)
            sch.unroll(in_row)
            sch.unroll(in_col)
            return sch.fuse(batch, tile_row, tile_col), channel

    return WinogradTransforms

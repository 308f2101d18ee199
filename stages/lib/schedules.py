"""Default GPU schedule rules for kernels without a tuning record (TVM's dlight), with WebGPU settings.

dlight's Matmul rule picks its tile configuration by target kind and has none for WebGPU, whose generic
default is 8 x 8 threads computing 32 x 32 tiles with a K step of 8 and scalar loads. WebGPU runs on the
same desktop GPUs CUDA does, with the same workgroup memory (at least 16 KiB guaranteed): the CUDA tiles
(8 x 16 threads, 32 x 64 tiles, K step 16) fit within WebGPU's default limits (128 threads of the guaranteed
256; 12 KiB of workgroup memory). Loads stay scalar: TVM 0.27 fails to emit WGSL for the float2 ones. Measured on an H100 (bench/results/): these tiles took the
UNet from 470 to 228 ms per step; 16 x 16 threads were no faster (234) and 8 x 8 micro tiles twice as slow (440).
"""

from __future__ import annotations


def default_rules():
    from tvm.s_tir import dlight as dl

    class Matmul(dl.gpu.Matmul):
        def get_configs(self, target):
            if target.kind.name == "webgpu":
                return dl.gpu.Matmul.Config(
                    block_size_x=8, block_size_y=16, vthread_x=1, vthread_y=1, micro_size_x=4, micro_size_y=4,
                    micro_size_k=16, vector_size=1, unroll=256, use_shared=True, storage_align=True, inner_x=False)
            return super().get_configs(target)

    return [Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]

"""The GEMM template for WebGPU: large output tiles, both operands K-major in workgroup memory, vec4 arithmetic.

dlight's template (the schedule every matmul and convolution got before) gives each thread a 4 x 4 block of
32 x 64 tiles and keeps both operands as they are laid out, K innermost, in workgroup memory, so every
multiply-add of a thread's inner loop starts with two scalar workgroup reads. Here:

- a workgroup of threads_y x threads_x threads computes a tile of (virtual_m * threads_y * 4) x
  (virtual_n * threads_x * 4) outputs, up to 128 x 128 over 256 threads with 8 x 8 outputs each;
- both operands are stored K-major in workgroup memory (the A tile transposed on its way in), so for one k a
  thread reads its 4 B values as one vec4 and its A values as scalars every thread of a row shares (a
  broadcast), and multiplies with vec4 fma into vec4 accumulators;
- a thread's outputs are `virtual` blocks of 4 spaced threads * 4 apart, not one block of 8: the vec4 reads of a
  warp are then contiguous (no bank conflicts) and its vec4 stores of the result coalesce;
- rows of the workgroup tiles are padded by 4 values: the transposing stores of a K step of 8 fall in 32
  different banks;
- shapes are padded to tile multiples (pad_einsum), so only the loads into workgroup memory check bounds.

The schedule is built from TVM's schedule primitives on the same normalized form dlight uses
(C[S, I, J] += A[S, I, K] * B[S, J, K]); prologues (casts, transposes, padding) are inlined into the loads and
epilogues (bias, activations, residuals) into the stores, as in dlight.
"""

from __future__ import annotations

from dataclasses import dataclass

VECTOR = 4  # outputs per thread along each axis in one virtual block: one vec4 along N
PAD = 4  # values appended to each K-major row of a workgroup tile


@dataclass(frozen=True)
class Config:
    threads_x: int = 16  # along N (the output's contiguous axis)
    threads_y: int = 16  # along M
    virtual_n: int = 2
    virtual_m: int = 2
    k_step: int = 8
    unroll: int = 256

    @property
    def tile_m(self) -> int:
        return self.virtual_m * self.threads_y * VECTOR

    @property
    def tile_n(self) -> int:
        return self.virtual_n * self.threads_x * VECTOR

    @property
    def workgroup_bytes(self) -> int:
        return (self.tile_m + self.tile_n + 2 * PAD) * self.k_step * 4

    def label(self) -> str:
        return f"g{self.tile_m}x{self.tile_n}/{self.threads_y}x{self.threads_x}/k{self.k_step}"


def schedule(func, config: Config | None = None):
    """`func` (a matmul-like PrimFunc with one reduction block: a matmul, a batch of them, a convolution)
    scheduled with the template, with `config` or the default tile for its shape; None where it does not have
    that form."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis.common_analysis import get_root_block
    from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                             get_reduction_blocks)

    sch = s_tir.Schedule(func)
    blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if not blocks or len(blocks) != 1 or not get_index_map(sch.get(blocks[0])):
        return None
    main = blocks[0]
    k_contiguous = [_k_contiguous(sch.get(main), operand) for operand in (0, 1)]

    # Normalize to C[S, I, J] += A[S, I, K] * B[S, J, K].
    read_a = sch.reindex(main, ("read", 0))
    read_b = sch.reindex(main, ("read", 1))
    write_c = sch.reindex(main, ("write", 0))
    block_map, a_map, b_map, c_map = get_index_map(sch.get(main))
    sch.transform_layout(read_a, ("write", 0), a_map)
    sch.transform_layout(read_b, ("write", 0), b_map)
    sch.transform_layout(write_c, ("read", 0), c_map)
    sch.transform_block_layout(main, block_map)

    if config is None:
        config = default_config(*(_extent(iv) for iv in sch.get(main).iter_vars[1:]))
    sch.pad_einsum(main, [1, config.tile_m, config.tile_n, config.k_step])
    batch, i, j, k = sch.get_loops(main)
    block_i, virtual_i, thread_i, inner_i = sch.split(i, [None, config.virtual_m, config.threads_y, VECTOR])
    block_j, virtual_j, thread_j, inner_j = sch.split(j, [None, config.virtual_n, config.threads_x, VECTOR])
    k_outer, k_inner = sch.split(k, [None, config.k_step])
    sch.reorder(block_i, block_j, virtual_i, virtual_j, thread_i, thread_j, k_outer, k_inner, inner_i, inner_j)
    sch.bind(sch.fuse(batch, block_i), "blockIdx.y")
    sch.bind(block_j, "blockIdx.x")
    sch.bind(virtual_i, "vthread.y")
    sch.bind(virtual_j, "vthread.x")
    sch.bind(thread_i, "threadIdx.y")
    sch.bind(thread_j, "threadIdx.x")
    sch.vectorize(inner_j)
    sch.annotate(thread_j, "pragma_auto_unroll_max_step", config.unroll)
    sch.annotate(thread_j, "pragma_unroll_explicit", 1)

    store = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(store, thread_j, preserve_unit_loops=True)
    _, vector = sch.split(sch.get_loops(store)[-1], [None, VECTOR])
    sch.vectorize(vector)

    for operand in (0, 1):
        load = sch.cache_read(main, operand, "shared")
        loops = len(sch.get_loops(load))
        assert loops == 3, "the normalized operands are [S, rows, K]"
        sch.compute_at(load, k_outer, preserve_unit_loops=True)
        s, row, kk = sch.get_loops(load)[-loops:]
        # Consecutive threads take consecutive addresses of the operand in memory: along K for x[m, k] or a
        # torch-layout weight, along the rows for the build's transposed weights [k, n].
        outer, inner = (row, kk) if k_contiguous[operand] else (kk, row)
        sch.reorder(outer, inner)
        fused = sch.fuse(s, outer, inner)
        sch.transform_layout(load, ("write", 0), lambda s, row, kk: (s, kk, row))  # K-major
        load_y, load_x, _ = sch.split(fused, [config.threads_y, config.threads_x, None])
        sch.bind(load_y, "threadIdx.y")
        sch.bind(load_x, "threadIdx.x")
        sch.storage_align(load, 0, axis=1, factor=32, offset=PAD)
        auto_inline_producers(sch, load)
    auto_inline_consumer_chain(sch, store)
    sch.decompose_reduction(main, k_outer)
    return sch


def _k_contiguous(block, operand: int) -> bool:
    """Whether the operand is contiguous in memory along K: its innermost index has only reduction variables
    (x[m, k], a torch-layout weight, a convolution's weight). Not for the build's transposed weights [k, n] or a
    convolution's input (its innermost index follows the output's columns)."""
    from tvm import tirx

    spatial = [iv.var for iv in block.iter_vars if iv.iter_type != tirx.IterVar.CommReduce]
    index_vars = tirx.analysis.undefined_vars(block.reads[operand].region[-1].min)
    return not any(var.same_as(s) for var in index_vars for s in spatial)


def default_config(m: int, n: int, k: int) -> Config:
    """The tile for an M x N x K product without a tuning record. Measured on an H200 over the linear layers of
    both UNets (bench/gemm_kernels.py; bench/results/2026-12-01-h200-gemm-kernels-*.json): where both M and N
    reach 2048, 64 x 128 tiles over 8 x 16 threads (28-31 TFLOP/s on the GEGLU projections, where the build's
    dlight tiles reached 21.5-23); elsewhere (N of 320-1280 at 8192 rows, or few rows) 64 x 64 tiles over
    16 x 16 threads, which keep more workgroups in flight."""
    if m >= 2048 and n >= 2048:
        return Config(threads_y=8)
    return Config(virtual_m=1, virtual_n=1)


def _extent(iter_var) -> int:
    extent = iter_var.dom.extent
    return int(extent) if hasattr(extent, "value") else 1 << 20  # a symbolic extent counts as large

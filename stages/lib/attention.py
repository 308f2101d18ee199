"""Attention as one kernel: softmax(q k^T) v without the score matrix in memory (flash attention's online
softmax, Dao et al. 2022), for the GPU; the plain three-step definition for everything else.

At 64 x 64 latents each UNet self-attention makes 16 x 4096 x 4096 float32 scores: 1 GiB written by the
q k^T product, read and written by softmax, read by the product with v, five times per step (the largest
tensor of the model, which limited the adapters it could run on). Here a workgroup keeps its block of query
rows and their running softmax state on chip and streams k and v through workgroup memory in blocks of keys:
nothing between the inputs and the output touches memory.

The layout follows the traced graph, after the head split: q (batch * heads, n_q, d) already scaled by
1 / sqrt(d), k transposed (batch * heads, d, n_k), v (batch * heads, n_k, d) -> (batch * heads, n_q, d).

`reference` is the definition the lowered module carries (target-independent: the CPU library compiles it as
it is); the GPU schedule rule (stages/lib/schedules.py) replaces it with `kernel`, written here already
scheduled: TVM's schedule primitives cannot express the loop-carried softmax state.
"""

from __future__ import annotations

from dataclasses import dataclass

# Marks the reference PrimFunc for the GPU rule (and keeps tuning off it: it is no GEMM template's).
KERNEL_ATTR = "websd.kernel"
KERNEL_NAME = "attention"
# Heads wider than this keep the three-kernel form: a thread holds `rows` query rows and their output
# accumulators in registers (2 * rows * d floats), and past this they would spill.
MAX_HEAD_DIM = 128
# Finite "minus infinity" for masked keys and the initial running maximum: exp(NEG - m) is exactly 0 for any
# real score m, and NEG - m cannot overflow to -inf and NaN the way -inf - (-inf) would.
NEG = -1.0e30
WORKGROUP_STORAGE = 16384


@dataclass(frozen=True)
class Config:
    threads: int  # query rows in flight per workgroup = threads * rows
    rows: int  # query rows per thread: each k and v value read from workgroup memory serves `rows` FMAs
    keys: int  # keys per block streamed through workgroup memory
    # "block": a block's scores in registers, one maximum and rescale per block (independent dot products
    # per key: instruction-level parallelism, but rows * keys more registers); "stream": one key at a time,
    # rescaling only when the running maximum grows (rarely after the first keys): fewer registers.
    mode: str = "block"


def reference(q, k_t, v, out_dtype: str):
    """softmax(q k_t) v in three stages, float32 in the middle."""
    from tvm import te, topi

    bh, n_q, d = (int(x) for x in q.shape)
    n_k = int(k_t.shape[2])
    c = te.reduce_axis((0, d), name="c")
    scores = te.compute((bh, n_q, n_k), lambda b, i, j: te.sum(q[b, i, c].astype("float32") *
                                                                  k_t[b, c, j].astype("float32"), axis=c),
                        name="scores")
    probs = topi.nn.softmax(scores, axis=-1)
    j = te.reduce_axis((0, n_k), name="j")
    return te.compute((bh, n_q, d), lambda b, i, e: te.sum(probs[b, i, j] * v[b, j, e].astype("float32"), axis=j)
                      .astype(out_dtype), name="attention")


def worth_fusing(n_q: int, n_k: int, d: int) -> bool:
    """Where the kernel beats the three it replaces (bench/attention_kernels.py on an H200, median of 7
    interleaved rounds; bench/results/2026-12-01-h200-attention-kernels-sdxl.json for SDXL's shapes):
    - heads up to 40 wide always (SD 1.5's 4096 x 4096 self-attention 2.31 vs 3.50 ms, 4096 x 77 cross-attention
      0.10 vs 0.28);
    - wider heads over the 77 text tokens (d = 80: 0.073 vs 0.131; SDXL's d = 64: 0.66 vs 1.22 ms at 1024 queries,
      1.11 vs 0.70 at 4096, a wash over a step: 60 calls of the first, 10 of the second);
    - 64-wide heads over many keys (SDXL's 4096 x 4096: 6.1 vs 13.3 ms), but not over 1024 (1.00 vs 0.68), nor
      80-wide ones (SD 1.5's 1024 x 1024: 0.54 vs 0.42): one row per thread only, two would spill."""
    if d > MAX_HEAD_DIM:
        return False
    return d <= 40 or n_k <= 128 or (d <= 64 and n_k > 2048)


def default_config(bh: int, n_q: int, n_k: int, d: int) -> Config:
    """The fastest measured configuration per head width (worth_fusing's benchmark): up to 40 wide two rows per
    thread, streamed keys (18.6 TFLOP/s at 4096 x 4096, d = 40; one row per thread 14.6); wider heads one row per
    thread, blocks of 8 keys (SDXL's d = 64 at 4096 x 4096: 14.0 TFLOP/s, where two rows per thread spill and
    reach 5.1). Small problems (the tiny test model) get small unrolled bodies: SwiftShader compiles those in
    seconds."""
    if n_q * n_k * d < (1 << 22):
        return Config(threads=64, rows=1, keys=16)
    if d <= 40:
        return Config(threads=128, rows=2, keys=16, mode="stream")
    if d <= 64:
        return Config(threads=128, rows=1, keys=8)
    return Config(threads=64, rows=1, keys=8)


def kernel(bh: int, n_q: int, n_k: int, d: int, in_dtype: str, out_dtype: str, config: Config):
    """The scheduled PrimFunc (q, k_t, v, out) for these shapes."""
    from tvm.script import tirx as T

    threads, rows, keys = config.threads, config.rows, config.keys
    # k and v blocks in float32: within WebGPU's default workgroup storage, which every adapter offers.
    assert 2 * keys * d * 4 <= WORKGROUP_STORAGE, f"{config} needs {2 * keys * d * 4} bytes of workgroup memory"
    rows_per_group = threads * rows
    groups = -(-n_q // rows_per_group)
    key_blocks = -(-n_k // keys)
    tile_loads = -(-keys * d // threads)
    ragged_keys = n_k % keys != 0
    stream = config.mode == "stream"
    ragged_tile = keys * d % threads != 0
    f32 = "float32"

    @T.prim_func(private=True)
    def attention(q: T.Buffer((bh, n_q, d), in_dtype), k_t: T.Buffer((bh, d, n_k), in_dtype),
                  v: T.Buffer((bh, n_k, d), in_dtype), out: T.Buffer((bh, n_q, d), out_dtype)):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for group in T.thread_binding(bh * groups, thread="blockIdx.x"):
            for tx in T.thread_binding(threads, thread="threadIdx.x"):
                k_tile = T.alloc_buffer((keys, d), f32, scope="shared")
                v_tile = T.alloc_buffer((keys, d), f32, scope="shared")
                q_row = T.alloc_buffer((rows, d), f32, scope="local")
                acc = T.alloc_buffer((rows, d), f32, scope="local")
                score = T.alloc_buffer((rows, 1 if stream else keys), f32, scope="local")
                run_max = T.alloc_buffer((rows,), f32, scope="local")
                run_sum = T.alloc_buffer((rows,), f32, scope="local")
                new_max = T.alloc_buffer((rows,), f32, scope="local")
                rescale = T.alloc_buffer((rows,), f32, scope="local")
                b = group // groups
                first_row = group % groups * rows_per_group
                for r in T.unroll(rows):
                    for c in T.unroll(d):
                        # Rows past n_q (a partial last group) compute on a clamped row and are not written.
                        q_row[r, c] = T.cast(q[b, T.min(first_row + r * threads + tx, n_q - 1), c], f32)
                        acc[r, c] = T.float32(0)
                    run_max[r] = T.float32(NEG)
                    run_sum[r] = T.float32(0)
                for block in T.serial(key_blocks):
                    T.tvm_storage_sync("shared")
                    for i in T.unroll(tile_loads):
                        # Consecutive threads read consecutive keys of k_t's rows and consecutive values of
                        # v's: both loads are coalesced. Keys past n_k read a clamped key (masked below).
                        if not ragged_tile or i * threads + tx < keys * d:
                            k_tile[(i * threads + tx) % keys, (i * threads + tx) // keys] = T.cast(
                                k_t[b, (i * threads + tx) // keys,
                                    T.min(block * keys + (i * threads + tx) % keys, n_k - 1)], f32)
                            v_tile[(i * threads + tx) // d, (i * threads + tx) % d] = T.cast(
                                v[b, T.min(block * keys + (i * threads + tx) // d, n_k - 1),
                                  (i * threads + tx) % d], f32)
                    T.tvm_storage_sync("shared")
                    if stream:
                        for j in T.unroll(keys):
                            for r in T.unroll(rows):
                                score[r, 0] = T.float32(0)
                                for c in T.unroll(d):
                                    score[r, 0] = score[r, 0] + q_row[r, c] * k_tile[j, c]
                                if ragged_keys:
                                    if block * keys + j >= n_k:
                                        score[r, 0] = T.float32(NEG)
                                if score[r, 0] > run_max[r]:
                                    rescale[r] = T.exp(run_max[r] - score[r, 0])
                                    run_sum[r] = run_sum[r] * rescale[r]
                                    for c in T.unroll(d):
                                        acc[r, c] = acc[r, c] * rescale[r]
                                    run_max[r] = score[r, 0]
                                score[r, 0] = T.exp(score[r, 0] - run_max[r])
                                run_sum[r] = run_sum[r] + score[r, 0]
                                for c in T.unroll(d):
                                    acc[r, c] = acc[r, c] + score[r, 0] * v_tile[j, c]
                    else:
                        for r in T.unroll(rows):
                            for j in T.unroll(keys):
                                score[r, j] = T.float32(0)
                                for c in T.unroll(d):
                                    score[r, j] = score[r, j] + q_row[r, c] * k_tile[j, c]
                                if ragged_keys:
                                    if block * keys + j >= n_k:
                                        score[r, j] = T.float32(NEG)
                            new_max[r] = run_max[r]
                            for j in T.unroll(keys):
                                new_max[r] = T.max(new_max[r], score[r, j])
                            # Rescale what was summed under the old maximum (exp(NEG - m) = 0 on the first block).
                            rescale[r] = T.exp(run_max[r] - new_max[r])
                            run_sum[r] = run_sum[r] * rescale[r]
                            for c in T.unroll(d):
                                acc[r, c] = acc[r, c] * rescale[r]
                            for j in T.unroll(keys):
                                score[r, j] = T.exp(score[r, j] - new_max[r])
                                run_sum[r] = run_sum[r] + score[r, j]
                                for c in T.unroll(d):
                                    acc[r, c] = acc[r, c] + score[r, j] * v_tile[j, c]
                            run_max[r] = new_max[r]
                for r in T.unroll(rows):
                    if first_row + r * threads + tx < n_q:
                        for c in T.unroll(d):
                            out[b, first_row + r * threads + tx, c] = T.cast(acc[r, c] / run_sum[r], out_dtype)

    return attention


def flops(bh: int, n_q: int, n_k: int, d: int) -> int:
    """Multiply-adds x 2 of both products (what the GPU's FMA rate bounds)."""
    return 4 * bh * n_q * n_k * d


def is_attention(func) -> bool:
    return func.attrs is not None and KERNEL_ATTR in func.attrs and str(func.attrs[KERNEL_ATTR]) == KERNEL_NAME


def kernel_for(func, config: Config | None = None):
    """The GPU kernel replacing a reference PrimFunc (same parameters), with the default or a given config."""
    q, k_t, _, out = buffers(func)
    (bh, n_q, d), n_k = q[0], k_t[0][2]
    config = config or default_config(bh, n_q, n_k, d)
    return kernel(bh, n_q, n_k, d, q[1], out[1], config)


def buffers(func) -> list[tuple[list[int], str]]:
    """(shape, dtype) of each of a PrimFunc's buffer parameters."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return [([int(x) for x in info.shape], str(info.dtype)) for info in ArgInfo.from_prim_func(func)]

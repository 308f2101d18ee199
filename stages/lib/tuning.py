"""Kernel tuning for WebGPU: candidate schedules for the heavy kernels of a submodule, and the MetaSchedule
database (the tuning log) their measurements go into.

The search space is two GEMM templates over grids of tile shapes: this project's (stages/lib/gemm.py, the
default of large products; its configurations are tagged "gemm") and dlight's (threads per workgroup, register
tile, K step, unroll, load width). Each candidate is a MetaSchedule trace, so the log is an ordinary
MetaSchedule JSON database and the build applies it with TVM's own MetaScheduleApplyDatabase. The default
build's schedule is always a candidate, so a tuned kernel is never slower than the default one as measured.

Why not MetaSchedule's own GPU space: it has no rules for the WebGPU target kind, and generated through a
CUDA target carrying WebGPU's limits, TVM 0.27's samples were all rejected by its own GPU verifier on these
kernels (0 of 40 per kernel: one-or-two-workgroup grids with whole tensors cached in shared memory).
"""

from __future__ import annotations

import contextlib
import itertools
import random

# WebGPU's guaranteed limits (maxComputeInvocationsPerWorkgroup, maxComputeWorkgroupStorageSize): the one
# library runs on every adapter, so tuned kernels stay within what every adapter offers.
MAX_THREADS = 256
MAX_WORKGROUP_BYTES = 16384


GEMM = "gemm"


def gemm_space() -> list[tuple]:
    """The gemm template's configurations: ("gemm", threads x, threads y, virtual n, virtual m, K step, unroll),
    within the workgroup limits, the fastest on the H200's linear layers first (bench/gemm_kernels.py), so a
    round with few trials measures those."""
    from .gemm import Config

    first = [(16, 8, 2, 2, 8), (16, 16, 1, 1, 8), (16, 16, 2, 1, 16), (16, 16, 1, 2, 8), (16, 16, 2, 2, 8)]
    rest = [c for c in itertools.product((16,), (8, 16), (1, 2), (1, 2), (8, 16)) if c not in first]
    space = []
    for tx, ty, vn, vm, k in first + rest:
        config = Config(threads_x=tx, threads_y=ty, virtual_n=vn, virtual_m=vm, k_step=k)
        if config.workgroup_bytes <= MAX_WORKGROUP_BYTES:
            space.append((GEMM, tx, ty, vn, vm, k, config.unroll))
    return space


def tile_space() -> list[tuple]:
    """Every tile configuration of dlight's template: (threads x, threads y, micro x, micro y, K step, unroll,
    vector width of the loads into workgroup memory), in a fixed order."""
    space = []
    for tx, ty, mx, my, k, unroll, vector in itertools.product((4, 8, 16, 32), (4, 8, 16, 32), (2, 4, 8), (2, 4, 8),
                                                                (8, 16, 32), (16, 256), (1, 2, 4)):
        threads, accumulators = tx * ty, mx * my
        shared_bytes = (tx * mx + ty * my) * k * 4
        if 64 <= threads <= MAX_THREADS and 4 <= accumulators <= 32 and shared_bytes <= MAX_WORKGROUP_BYTES:
            space.append((tx, ty, mx, my, k, unroll, vector))
    return space


def normalize(config) -> tuple | None:
    """A configuration from the log as a tuple; the first rounds' 6-element ones loaded scalars (width 1)."""
    if not config:
        return None
    if config[0] == GEMM:
        return tuple(config)
    return tuple(config) + (1,) * (7 - len(config))


def proposal_order(task_name: str, best: list[tuple]) -> list[tuple]:
    """The order in which a kernel's configurations are proposed: first the gemm template's configurations
    (few, and the faster template), then the other load widths of its fastest dlight configurations so far
    (`best`), then dlight's whole space in a per-kernel random order that is the same in every round, so
    successive rounds walk through it instead of drawing the same configurations again."""
    order = tile_space()
    random.Random(task_name).shuffle(order)
    near = [c[:6] + (vector,) for c in best if c[0] != GEMM for vector in (1, 2, 4) if c[:6] + (vector,) != c]
    return gemm_space() + near + order


def heavy_tasks(mod, target, coverage: float, max_tasks: int):
    """The kernels worth tuning: MetaSchedule's extracted tasks by FLOPs x calls, heaviest first, until
    `coverage` of the submodule's FLOPs or `max_tasks`. Returns ([(task, flops_per_call)], covered fraction).
    Load-time functions (`<function>_prepare`) run once per page load, not per step: their kernels are left out,
    and so is the fused attention, whose kernel is hand-scheduled (stages/lib/attention.py), not the template's."""
    import tvm
    import tvm.s_tir
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from .attention import is_attention
    from .pipeline import PREPARE_SUFFIX

    per_call = {gv: f for gv, f in mod.functions_items() if not gv.name_hint.endswith(PREPARE_SUFFIX)}
    entries = [gv.name_hint for gv, f in per_call.items() if isinstance(f, relax.Function)]
    mod = relax.transform.DeadCodeElimination(entries)(tvm.IRModule(per_call))
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, target) if not is_attention(t.dispatched[0]["main"])]
    weighted = sorted(((tvm.s_tir.analysis.estimate_tir_flops(t.dispatched[0]), t) for t in tasks),
                      key=lambda ft: (-ft[0] * ft[1].weight, ft[1].task_name))
    total = sum(f * t.weight for f, t in weighted)
    chosen, covered = [], 0.0
    for flops, task in weighted:
        if covered >= coverage * total or len(chosen) >= max_tasks:
            break
        chosen.append((task, flops))
        covered += flops * task.weight
    return chosen, covered / total


def schedule_for(func, target, config):
    """The template's schedule of `func` (a PrimFunc) with tile `config`, or the default build's schedule
    with config None. None when the template does not apply or the tile does not fit the kernel."""
    from tvm import s_tir
    from tvm.s_tir import dlight as dl

    from .schedules import default_rules

    if config is None:
        for rule in default_rules():
            sch = rule.apply(func, target, False)
            if sch is not None:
                return sch if isinstance(sch, s_tir.Schedule) else sch[0]
        return None
    if config[0] == GEMM:
        from . import gemm

        _, tx, ty, vn, vm, k, unroll = config
        try:
            return gemm.schedule(func, gemm.Config(threads_x=tx, threads_y=ty, virtual_n=vn, virtual_m=vm, k_step=k,
                                                   unroll=unroll))
        except Exception:  # noqa: BLE001 - a form the template's primitives refuse
            return None

    class TiledMatmul(dl.gpu.Matmul):
        def get_configs(self, target):
            tx, ty, mx, my, k, unroll, vector = normalize(config)
            return dl.gpu.Matmul.Config(block_size_x=tx, block_size_y=ty, vthread_x=1, vthread_y=1,
                                        micro_size_x=mx, micro_size_y=my, micro_size_k=k, vector_size=vector,
                                        unroll=unroll, use_shared=True, storage_align=True, inner_x=False)

    try:
        with target:
            return TiledMatmul().apply(func, target, False)
    except Exception:  # noqa: BLE001 - dlight raises (rather than declines) on tiles that do not divide
        return None


def argument_specs(func) -> list[dict]:
    """Shape and dtype of each buffer argument, for the measuring script to allocate."""
    from tvm.s_tir import meta_schedule as ms

    return [{"shape": [int(s) for s in info.shape], "dtype": str(info.dtype)}
            for info in ms.arg_info.ArgInfo.from_prim_func(func)]


HISTORY = "measurements.json"


def workload_key(mod) -> str:
    """A kernel's identity across runs and machines: the structural hash MetaSchedule keys workloads by."""
    import tvm_ffi

    return f"{tvm_ffi.structural_hash(mod) & (2**64 - 1):016x}"


def read_history(tuning_dir) -> list[dict]:
    import json

    path = tuning_dir / HISTORY
    return json.loads(path.read_text())["measurements"] if path.exists() else []


def write_history(tuning_dir, history: list[dict]) -> None:
    import json

    from .cli import write_bytes_if_changed

    lines = ",\n".join(json.dumps(m, sort_keys=True) for m in history)  # one measurement per line: diffable
    write_bytes_if_changed(tuning_dir / HISTORY, ('{"measurements": [\n' + lines + "\n]}\n").encode())


@contextlib.contextmanager
def rewrite_database(tuning_dir):
    """The tuning log's MetaSchedule database, to add records to; on exit it is rewritten with only the
    fastest record per kernel (MetaSchedule's own pruning) and swapped in atomically."""
    import tempfile
    from pathlib import Path

    from tvm.s_tir import meta_schedule as ms

    from .cli import file_if_changed
    from .pipeline import DATABASE_FILES

    tuning_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tuning_dir.parent) as tmp:
        work = Path(tmp)
        for name in DATABASE_FILES:
            (work / name).write_bytes((tuning_dir / name).read_bytes() if (tuning_dir / name).exists() else b"")
        database = ms.database.JSONDatabase(*(str(work / n) for n in DATABASE_FILES))
        yield database
        (work / "pruned").mkdir()
        pruned = ms.database.JSONDatabase(*(str(work / "pruned" / n) for n in DATABASE_FILES))
        database.dump_pruned(pruned)
        for name in DATABASE_FILES:
            with file_if_changed(tuning_dir / name) as out:
                out.write_bytes((work / "pruned" / name).read_bytes())

"""tune-search: one round of kernel tuning for a submodule, in two halves around a GPU measurement.

    python stages/tune_search.py --variant-dir artifacts/sd15-random --submodule unet propose \\
        --tuning-dir artifacts/tuning/sd15/unet --work-dir build/tune/sd15/unet --trials 24 --runtime-dir ...
    node stages/tune_measure.mjs --work-dir build/tune/sd15/unet          (on a machine with the GPU)
    python stages/tune_search.py --variant-dir artifacts/sd15-random --submodule unet record \\
        --tuning-dir artifacts/tuning/sd15/unet --work-dir build/tune/sd15/unet

propose: picks the kernels that hold most of the submodule's FLOPs, and for each the next `--trials` tile
configurations not yet in the tuning log (plus the default schedule, until it is measured), compiles them all
for WebGPU into one candidates.wasm with a manifest of what to call with which argument shapes.
record: appends every measured candidate (failures too, so they are not proposed again) to the tuning log.
Rounds resume from the log: run `make tune` again to continue. Tuning needs the full-size shapes, so it
reads a full-size variant (WEIGHTS=random has the real architecture); the tiny test model keeps defaults.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import StageError, paths_from, run_stage, stage_parser, write_bytes_if_changed  # noqa: E402
from lib.relax_io import load_module  # noqa: E402

PREFIX = "tune_candidates_"  # system-library prefix of candidates.wasm (TVM needs 8+ characters)


def tasks_of(paths, args):
    from lib import tuning
    from lib.targets import target as make_target

    lowered, _ = load_module(paths.lowered, f"make sd15 WEIGHTS=random (for {paths.lowered})")
    target = make_target("webgpu")
    chosen, covered = tuning.heavy_tasks(lowered, target, args.coverage, args.max_tasks)
    return target, chosen, covered


def propose(paths, args) -> None:
    from lib import tuning
    from lib.wasm_link import link_wasm
    from export_lib import deterministic_tar

    start = time.time()
    target, chosen, covered = tasks_of(paths, args)
    history = tuning.read_history(args.tuning_dir)
    measured = {(m["workload"], tuning.normalize(m["config"])) for m in history}

    functions, manifest = {}, {"prefix": PREFIX, "tasks": []}
    for t, (task, flops) in enumerate(chosen):
        func = task.dispatched[0]["main"]
        workload = tuning.workload_key(task.dispatched[0])
        entry = {"task": task.task_name, "flops": flops, "calls": task.weight,
                 "args": tuning.argument_specs(func), "candidates": []}
        entry["workload"] = workload
        fastest = sorted((m for m in history if m["workload"] == workload and m["ms"] is not None and m["config"]),
                         key=lambda m: m["ms"])[:4]
        for config in [None] + tuning.proposal_order(task.task_name, [tuning.normalize(m["config"]) for m in fastest]):
            if config is not None and sum(c["config"] is not None for c in entry["candidates"]) >= args.trials:
                break
            if (workload, config) in measured:
                continue
            sch = tuning.schedule_for(func, target, config)
            if sch is None:
                continue
            name = f"t{t}_c{len(entry['candidates'])}"
            functions[name] = sch.mod["main"].with_attr("global_symbol", name)
            entry["candidates"].append({"function": name, "config": config})
        manifest["tasks"].append(entry)
    count = sum(len(e["candidates"]) for e in manifest["tasks"])
    if not count:
        raise StageError(f"every candidate of the {len(chosen)} kernels is already in {args.tuning_dir}; "
                         f"the tile space is exhausted (nothing to tune)")
    print(f"propose: {len(chosen)} kernels ({covered:.0%} of the FLOPs), {count} candidates; compiling",
          flush=True)

    args.work_dir.mkdir(parents=True, exist_ok=True)
    library, rejected = build_dropping_failures(functions, target)
    for entry in manifest["tasks"]:  # (recorded as failures, so that no later round proposes them again)
        entry["rejected"] = [c["config"] for c in entry["candidates"] if c["function"] in rejected]
        entry["candidates"] = [c for c in entry["candidates"] if c["function"] not in rejected]
    if rejected:
        print(f"propose: TVM could not compile {len(rejected)} candidates (dropped)", flush=True)
    raw = args.work_dir / "candidates.raw.tar"
    library.export_library(str(raw))
    tar = args.work_dir / "candidates.tar"
    write_bytes_if_changed(tar, deterministic_tar(raw))
    raw.unlink()
    link_wasm([tar], args.runtime_dir, args.work_dir / "candidates.wasm", shipped=False)
    (args.work_dir / "measured.json").unlink(missing_ok=True)
    write_bytes_if_changed(args.work_dir / "candidates.json", json.dumps(manifest, indent=1).encode())
    print(f"propose: {args.work_dir}/candidates.wasm + candidates.json in {time.time() - start:.0f}s; "
          f"measure them with stages/tune_measure.mjs on the GPU")


def build_dropping_failures(functions: dict, target):
    """Compiles the candidates as one library; when TVM rejects some (it fails on a few vectorised tiles),
    finds them by bisection and leaves them out. Returns (library, names of the rejected)."""
    import tvm

    from lib.pipeline import tir_pipeline

    def build(names):
        module = tvm.IRModule({n: functions[n] for n in names}).with_attr("system_lib_prefix", PREFIX)
        with tvm.transform.PassContext(opt_level=3):
            return tvm.tirx.build(module, target=target, pipeline=tir_pipeline())

    def failing(names):
        try:
            build(names)
            return []
        except Exception:  # noqa: BLE001 - any compile error marks the candidate
            if len(names) == 1:
                return names
            half = len(names) // 2
            return failing(names[:half]) + failing(names[half:])

    names = sorted(functions)
    try:
        return build(names), set()
    except Exception:  # noqa: BLE001
        rejected = set(failing(names))
        return build([n for n in names if n not in rejected]), rejected


def record(paths, args) -> None:
    from tvm.s_tir import meta_schedule as ms

    from lib import tuning

    manifest_path, measured_path = args.work_dir / "candidates.json", args.work_dir / "measured.json"
    for p in (manifest_path, measured_path):
        if not p.exists():
            raise StageError(f"missing {p}: run `make tune-propose` and then `make tune-measure` first")
    manifest, measured = json.loads(manifest_path.read_text()), json.loads(measured_path.read_text())
    results = {r["function"]: r for r in measured["candidates"]}
    target, chosen, _ = tasks_of(paths, args)
    by_name = {task.task_name: task for task, _ in chosen}

    history = tuning.read_history(args.tuning_dir)
    new = []
    for entry in manifest["tasks"]:
        if entry["task"] not in by_name:
            raise StageError(f"{manifest_path} names kernel {entry['task']}, which {paths.lowered} does not have; "
                             f"the model changed since propose: run `make tune` again")
        workload = tuning.workload_key(by_name[entry["task"]].dispatched[0])
        for cand in entry["candidates"]:
            result = results.get(cand["function"])
            if result is not None:  # (absent: not measured before the time budget ran out; proposed again)
                new.append({"task": entry["task"], "workload": workload, "config": cand["config"],
                            "ms": result.get("ms"), "error": result.get("error"), "gpu": measured.get("adapter")})
        for config in entry.get("rejected", []):
            new.append({"task": entry["task"], "workload": workload, "config": config, "ms": None,
                        "error": "TVM could not compile it", "gpu": None})
    history += new

    # The log keeps the fastest schedule of each kernel ever measured (MetaSchedule records) and a compact
    # history of every measurement (so no configuration is proposed twice).
    improved = []
    with tuning.rewrite_database(args.tuning_dir) as database:
        for name, task in by_name.items():
            workload = tuning.workload_key(task.dispatched[0])
            timed = [m for m in history if m["workload"] == workload and m["ms"] is not None]
            if not timed:
                continue
            best = min(timed, key=lambda m: m["ms"])
            committed = database.commit_workload(task.dispatched[0])
            previous = database.get_top_k(committed, 1)
            if previous and float(previous[0].run_secs[0]) * 1e3 <= best["ms"]:
                continue
            func = task.dispatched[0]["main"]
            sch = tuning.schedule_for(func, target, tuning.normalize(best["config"]))
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, committed, run_secs=[best["ms"] / 1e3],
                target=target, args_info=ms.arg_info.ArgInfo.from_prim_func(func)))
            improved.append(name)
    tuning.write_history(args.tuning_dir, history)
    # Recorded once: a second `make tune-record` of the same measurements would count them twice.
    measured_path.replace(measured_path.with_name("measured.recorded.json"))
    print(f"record: {len(new)} measurements ({sum(m['ms'] is None for m in new)} failed) into {args.tuning_dir}; "
          f"{len(improved)} kernels got a faster schedule (GPU: {measured.get('adapter', '?')})")


def main():
    parser = stage_parser(__doc__)
    parser.add_argument("action", choices=["propose", "record"])
    parser.add_argument("--tuning-dir", type=Path, required=True, help="the tuning log, artifacts/tuning/<model>/<sub>")
    parser.add_argument("--work-dir", type=Path, required=True, help="where candidates and measurements go")
    parser.add_argument("--trials", type=int, default=16, help="new tile configurations per kernel and round")
    parser.add_argument("--coverage", type=float, default=0.95, help="tune the heaviest kernels up to this FLOP share")
    parser.add_argument("--max-tasks", type=int, default=64)
    parser.add_argument("--runtime-dir", type=Path, help="TVM web runtime objects (propose)")
    args = parser.parse_args()
    paths = paths_from(args)
    if args.action == "propose":
        if args.runtime_dir is None:
            parser.error("propose needs --runtime-dir")
        propose(paths, args)
    else:
        record(paths, args)


if __name__ == "__main__":
    run_stage("tune-search", main, uses_torch=False)

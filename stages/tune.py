"""tune: schedule the lowered kernels of one submodule for WebGPU, from its tuning log.

    python stages/tune.py --variant-dir artifacts/sd15-tiny --submodule unet [--tuning-dir artifacts/tuning/sd15/unet]

Kernels recorded in the MetaSchedule database (database_workload.json + database_tuning_record.json,
checked into git under artifacts/tuning/<model>/<submodule>/) get their tuned schedule; every other kernel
gets TVM's default GPU schedule (dlight). Running a tuning session is `make tune`; this stage only applies
what the log holds, so a changed log rebuilds this submodule and nothing else.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import StageError, log_stage, paths_from, run_stage, stage_parser, write_provenance  # noqa: E402
from lib.pipeline import DATABASE_FILES  # noqa: E402
from lib.relax_io import load_module, save_module  # noqa: E402



def main():
    parser = stage_parser(__doc__)
    parser.add_argument("--tuning-dir", type=Path, help="MetaSchedule database folder (absent: no tuned kernels)")
    parser.add_argument("--target", default="webgpu")
    args = parser.parse_args()
    paths = paths_from(args)
    start = time.time()

    from lib import pipeline
    from lib.targets import target as make_target

    database_dir = None
    if args.tuning_dir is not None and args.tuning_dir.exists():
        present = [f for f in DATABASE_FILES if (args.tuning_dir / f).exists()]
        if present and len(present) < len(DATABASE_FILES):
            raise StageError(f"{args.tuning_dir} has {present[0]} but not the other database file; a tuning "
                             f"log is the pair {' + '.join(DATABASE_FILES)} (rerun `make tune`)")
        database_dir = args.tuning_dir if present else None

    lowered, meta = load_module(paths.lowered, f"make {paths.lowered}")
    target = make_target(args.target)
    scheduled = pipeline.run_phases(lowered, [("schedule", lambda: pipeline.schedule(target, database_dir))],
                                    target=target)
    out = paths.scheduled(args.target)
    wrote = save_module(out, scheduled, meta)
    inputs = [paths.lowered] + ([database_dir / f for f in DATABASE_FILES] if database_dir else [])
    write_provenance(out, "tune", inputs, {"target": args.target})
    log_stage(paths, "tune")
    print(f"tune {paths.variant}/{paths.submodule}: {'database ' + str(database_dir) if database_dir else 'no tuning log'}"
          f", {time.time() - start:.1f}s -> {out}{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("tune", main, uses_torch=False)

"""Build cost: wall time and peak memory of every stage `make <model>` runs, and the size of what it writes.

    .venv/bin/python bench/build_cost.py                         # SD 1.5, WEIGHTS=random (full size), temporary folder
    .venv/bin/python bench/build_cost.py --model sdxl --targets webgpu --jobs 1 --json sdxl-cost.json
    .venv/bin/python bench/build_cost.py --weights tiny          # quick sanity run of this script (a few minutes)
    .venv/bin/python bench/build_cost.py --artifacts DIR --keep --json cost.json

Runs `make <model> WEIGHTS=<weights> ARTIFACTS=<dir> TARGETS=<targets> JOBS=<jobs>` once, from scratch, with make's PY pointed at this script's
--measure mode: every stage command make runs (`$(PY) stages/<stage>.py ...`) goes through it, which runs the
stage, waits for it and appends one JSON line (stage, submodule, wall time, peak RSS, CPU time) to a log.
Peak RSS is getrusage(RUSAGE_CHILDREN).ru_maxrss in the measuring process: the largest resident set of the
stage or of anything it ran and waited for (a compiler, a linker), not a sum over processes. The TVM web
runtime (BUILD-RUNTIME, once per ARTIFACTS folder and TVM version) is measured like a stage.

Not a test: nothing is asserted. A full-size run needs the machine for itself (tens of minutes, several GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"
sys.path.insert(0, str(ROOT / "stages"))
from lib.models import FAMILIES  # noqa: E402  (the family table: which submodules and files to report)

# Per-submodule files, in build order: (column title, path under artifacts/<variant>/<submodule>/).
SUBMODULE_FILES = (("traced", "traced.v1.json"), ("lowered", "lowered.v1.json"),
                   ("scheduled", "scheduled.webgpu.v1.json"), ("lib.webgpu", "lib.webgpu.v1.tar"),
                   ("lib.cpu", "lib.cpu.v1.so"), ("params", "params.v1"))
VARIANT_FILES = ("model.json", "scheduler.v1", "tokenizer.v1", "weights")
# The Makefile reads these with ?=; inherited from the caller's shell they would change the build measured.
MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "WEIGHTS", "MODEL", "VARIANT", "ARTIFACTS",
            "TUNING", "PY", "V", "TARGETS", "JOBS")
MIB = 2**20


# ---- --measure: one stage -----------------------------------------------------------------------------------


def describe(cmd: list[str]) -> dict:
    """stage, submodule and target from a stage command line (`python stages/export_lib.py --submodule unet
    --target webgpu` -> export_lib, unet, webgpu)."""
    script = next((Path(a).stem for a in cmd if a.endswith(".py")), Path(cmd[0]).name)

    def option(name):
        return cmd[cmd.index(name) + 1] if name in cmd[:-1] else None

    target = "link" if "--link" in cmd else option("--target") or option("--size")
    return {"stage": script, "submodule": option("--submodule") or "-", "target": target or ""}


def measure(log: Path, cmd: list[str]) -> int:
    start = time.perf_counter()
    returncode = subprocess.run(cmd, check=False).returncode
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {**describe(cmd), "wall_s": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss * 1024 / MIB, 1),
              "user_s": round(usage.ru_utime, 2), "sys_s": round(usage.ru_stime, 2), "returncode": returncode}
    with open(log, "a", encoding="utf-8") as out:  # one short write per line: make runs stages one at a time
        out.write(json.dumps(record) + "\n")
    return returncode


# ---- the whole build --------------------------------------------------------------------------------------------


def size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def report(records: list[dict], make_wall: float, variant: Path, fam) -> dict:
    print(f"\n{'stage':<16}{'submodule':<11}{'target':<8}{'wall s':>9}{'peak RSS MiB':>14}{'CPU s':>9}")
    for r in records:
        print(f"{r['stage']:<16}{r['submodule']:<11}{r['target']:<8}{r['wall_s']:>9.1f}{r['peak_rss_mib']:>14.0f}"
              f"{r['user_s'] + r['sys_s']:>9.1f}")
    total_wall = sum(r["wall_s"] for r in records)
    peak = max((r["peak_rss_mib"] for r in records), default=0)
    cpu = sum(r["user_s"] + r["sys_s"] for r in records)
    print(f"{f'total, {len(records)} stage runs':<35}{total_wall:>9.1f}{peak:>14.0f}{cpu:>9.1f}   (RSS: the largest)")
    print(f"make, start to end: {make_wall:.1f} s wall")

    by_stage: dict[str, list[float]] = {}
    for r in records:
        by_stage.setdefault(r["stage"], []).append(r["wall_s"])
    ranked = sorted(by_stage.items(), key=lambda item: -sum(item[1]))
    print("per stage: " + ", ".join(f"{stage} {sum(walls):.1f} s" for stage, walls in ranked))

    submodules = [s.name for s in fam.submodules]
    sizes = {sub: {title: size(variant / sub / rel) for title, rel in SUBMODULE_FILES} for sub in submodules}
    print(f"\n{'outputs, MiB':<12}" + "".join(f"{title:>12}" for title, _ in SUBMODULE_FILES))
    for sub in submodules:
        print(f"{sub:<12}" + "".join(f"{mib(sizes[sub][title]):>12}" for title, _ in SUBMODULE_FILES))
    per_variant = {name: size(variant / name) for name in (fam.wasm_name, *VARIANT_FILES)}
    print("variant: " + ", ".join(f"{name} {mib(n)}" for name, n in per_variant.items()))
    whole = size(variant)
    manifest = variant / "model.json"
    download = json.loads(manifest.read_text()).get("download_bytes") if manifest.exists() else None
    print(f"the variant folder: {mib(whole)} MiB; the page downloads (model.json download_bytes): {mib(download)} MiB")
    return {"stages": records, "make_wall_s": round(make_wall, 1), "total_stage_wall_s": round(total_wall, 1),
            "peak_rss_mib": peak, "sizes_bytes": {"submodules": sizes, "variant": per_variant, "whole": whole,
                                                  "download": download}}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":  # called by make as $(PY): --measure LOG -- CMD...
        log, rest = Path(sys.argv[2]), sys.argv[3:]
        return measure(log, rest[1:] if rest[:1] == ["--"] else rest)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15", choices=list(FAMILIES), help="the family to build (default sd15)")
    parser.add_argument("--targets", default="webgpu cpu", help='TARGETS (default "webgpu cpu")')
    parser.add_argument("--jobs", type=int, default=1,
                        help="JOBS: parallel stages (default 1, so each stage's peak is its own)")
    parser.add_argument("--weights", default="random",
                        help="random (full size, the default), tiny (quick sanity run) or a diffusers folder")
    parser.add_argument("--artifacts", type=Path,
                        help="ARTIFACTS folder, new or empty (default: a temporary one, removed unless --keep)")
    parser.add_argument("--tuning", type=Path, help="TUNING folder (default: the Makefile's, artifacts/tuning)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary ARTIFACTS folder")
    parser.add_argument("--json", type=Path, help="also write the measurements and sizes here")
    args = parser.parse_args()

    py = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    artifacts = (args.artifacts or Path(tempfile.mkdtemp(prefix="build-cost-"))).resolve()
    if artifacts.exists() and any(artifacts.iterdir()) and args.artifacts:
        parser.error(f"--artifacts {artifacts} is not empty; the cost of a build is measured from scratch")
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts / "build-cost.jsonl"
    model, fam = args.model, FAMILIES[args.model]
    variables = {"WEIGHTS": args.weights, "ARTIFACTS": str(artifacts), "TARGETS": args.targets, "JOBS": str(args.jobs),
                 "PY": f"{py} {Path(__file__).resolve()} --measure {log} -- {py}"}
    if args.tuning:
        variables["TUNING"] = str(args.tuning.resolve())
    cmd = ["make", "--no-print-directory", model, *(f"{k}={v}" for k, v in variables.items())]
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    print(f"build_cost: make {model} WEIGHTS={args.weights} ARTIFACTS={artifacts} TARGETS=\"{args.targets}\" "
          f"JOBS={args.jobs}", flush=True)
    try:
        start = time.perf_counter()
        returncode = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        make_wall = time.perf_counter() - start
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if returncode != 0:
            print(f"build_cost: make failed (exit {returncode}); measured so far:", file=sys.stderr)
        variant = next((p for p in artifacts.iterdir() if p.is_dir() and p.name.startswith(model)), artifacts / model)
        result = report(records, make_wall, variant, fam)
        if args.json:
            args.json.write_text(json.dumps({"model": model, "weights": args.weights, "targets": args.targets,
                                             "jobs": args.jobs, "returncode": returncode, **result}, indent=1))
        return returncode
    finally:
        if args.keep or args.artifacts:
            print(f"kept {artifacts}")
        else:
            shutil.rmtree(artifacts, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

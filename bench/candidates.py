"""Single-kernel benchmarks' shared half: candidate kernels compiled into one candidates.wasm with the manifest
that stages/tune_measure.mjs (make tune's measuring step) reads, and its measurements read back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_candidates(work_dir: Path, functions: dict, tasks: list, prefix: str, runtime_dir: Path, target) -> None:
    """`functions` ({name: PrimFunc}) built with the build's TIR pipeline and linked with the web runtime into
    work_dir/candidates.wasm; `tasks` (what to call, with which argument shapes) into candidates.json."""
    import tvm

    from export_lib import deterministic_tar
    from lib.pipeline import tir_pipeline
    from lib.wasm_link import link_wasm

    work_dir.mkdir(parents=True, exist_ok=True)
    module = tvm.IRModule(functions).with_attr("system_lib_prefix", prefix)
    with tvm.transform.PassContext(opt_level=3):
        library = tvm.tirx.build(module, target=target, pipeline=tir_pipeline())
    raw = work_dir / "candidates.raw.tar"
    library.export_library(str(raw))
    tar = work_dir / "candidates.tar"
    tar.write_bytes(deterministic_tar(raw))
    raw.unlink()
    link_wasm([tar], runtime_dir, work_dir / "candidates.wasm", shipped=False)
    (work_dir / "candidates.json").write_text(json.dumps({"prefix": prefix, "tasks": tasks}, indent=1))
    print(f"{len(functions)} kernels -> {work_dir}/candidates.wasm")


def read_measured(work_dir: Path) -> tuple[dict, dict]:
    """(the candidates.json manifest, {function: its measurement}) after tune_measure.mjs wrote measured.json."""
    manifest = json.loads((work_dir / "candidates.json").read_text())
    measured = {r["function"]: r for r in json.loads((work_dir / "measured.json").read_text())["candidates"]}
    return manifest, measured


def main(doc: str, families, work_dir: str, propose, report) -> None:
    """The benchmarks' command line: `propose` or `report`, for one family, in a work dir (build/<work_dir>)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("propose", "report"))
    parser.add_argument("--family", choices=sorted(families), default="sd15")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / work_dir)
    parser.add_argument("--json", type=Path, help="report: also write the figures here (bench/results/)")
    parser.add_argument("--runtime-dir", type=Path, default=ROOT / "artifacts" / "tvm-runtime" / "0.27.0.post1")
    args = parser.parse_args()
    propose(args) if args.action == "propose" else report(args)

"""build-runtime: the TVM web runtime (C++) of the installed apache-tvm wheel -> wasm objects for the link.

    python stages/build_runtime.py --out-dir artifacts/tvm-runtime/<apache-tvm version>

Compiles, with emcc, the three files TVM's own web build compiles (`web/emcc/` in the wheel; see its
`web/Makefile`):

    wasm_runtime.o      TVM runtime + tvm-ffi + Relax VM, as one unity file (the wheel's wasm_runtime.cc)
    webgpu_runtime.o    the WebGPU device API and shader module (calls back into tvmjs)
    tvmjs_support.o     the C functions tvmjs calls (TVMWasmAllocSpace, ...) and its async local session

TVM's web build emits LLVM bitcode (`-emit-llvm`) here, which every link then optimises again: about 45 s of
a 83 s link of the tiny model on two cores, repeated for every model, fixture and tuning round. Objects
optimised once at -O3 link in seconds; the link's own wasm-opt pass still runs over the whole module.

The wheel ships these sources but not a few headers they include; the project's own versions of those
are in stages/tvm_runtime/ (its README says which and why). The sources are staged into one folder
laid out as TVM's source tree (wheel files, then the shims), beside the output as `.<out-dir>.src/`,
and compiled there with relative paths, so the objects do not depend on where the build ran.

The output folder is replaced as a whole and only when some file changed. stages/lib/wasm_link.py links
these with each submodule's objects into the page's .wasm.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import StageError, dir_if_changed, run_stage, sha256_file, write_json_if_changed  # noqa: E402

STAGE = "build-runtime"
SHIMS = Path(__file__).resolve().parent / "tvm_runtime"
UNITS = ("wasm_runtime", "webgpu_runtime", "tvmjs_support")

# TVM web/Makefile: EMCC_CFLAGS, without its `-emit-llvm` (see the top).
INCLUDE_DIRS = (".", "include", "3rdparty/tvm-ffi/include", "3rdparty/tvm-ffi/3rdparty/dlpack/include",
                "3rdparty/compiler-rt")
CFLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes", "-c")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StageError(f"python package {name} is not installed; run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


def stage_sources(tree: Path) -> None:
    """Lays out TVM's source tree under `tree`: the wheel's runtime sources, tvm-ffi, web/emcc, then the
    project's shims for the headers the wheel leaves out."""
    tvm_dir, ffi_dir = package_dir("tvm"), package_dir("tvm_ffi")
    copies = {
        "src/runtime": tvm_dir / "src/runtime",
        "include": tvm_dir / "include",
        "web/emcc": tvm_dir / "web/emcc",
        "3rdparty/tvm-ffi/include": ffi_dir / "include",
        "3rdparty/tvm-ffi/src": ffi_dir / "src",
        "3rdparty/tvm-ffi/3rdparty/dlpack": ffi_dir / "3rdparty/dlpack",
    }
    for src in copies.values():
        if not src.is_dir():
            raise StageError(f"{src} is missing from the installed wheels; reinstall them with `make venv`")
    shutil.rmtree(tree, ignore_errors=True)
    for rel, src in copies.items():
        shutil.copytree(src, tree / rel, ignore=shutil.ignore_patterns("__pycache__"))
    for shim in sorted(SHIMS.rglob("*.h")):
        rel = shim.relative_to(SHIMS)
        if (tree / rel).exists():
            raise StageError(f"the wheel now ships {rel}; drop the shim stages/tvm_runtime/{rel}")
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shim, tree / rel)


def emcc_version(emcc: str) -> str:
    try:
        out = subprocess.run([emcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise StageError(f"cannot run {emcc} ({err}); install emscripten (Debian package `emscripten`)") from None
    return out.splitlines()[0].strip()


def compile_unit(emcc: str, tree: Path, unit: str, out: Path) -> float:
    cmd = [emcc, *CFLAGS, *(f"-I{d}" for d in INCLUDE_DIRS), f"web/emcc/{unit}.cc", "-o", str(out)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise StageError(f"emcc failed on web/emcc/{unit}.cc (log above); command: {' '.join(cmd)} in {tree}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="artifacts/tvm-runtime/<apache-tvm version>")
    parser.add_argument("--emcc", default=os.environ.get("EMCC", "emcc"))
    parser.add_argument("--jobs", type=int, default=min(len(UNITS), os.cpu_count() or 1))
    args = parser.parse_args()

    out_dir = args.out_dir.resolve()
    tree = out_dir.with_name(f".{out_dir.name}.src")
    tool = emcc_version(args.emcc)
    stage_sources(tree)

    start = time.monotonic()
    with dir_if_changed(out_dir) as tmp:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            jobs = {u: pool.submit(compile_unit, args.emcc, tree, u, tmp / f"{u}.o") for u in UNITS}
            seconds = {u: round(job.result(), 1) for u, job in jobs.items()}
        # Provenance with paths relative to the staged tree, so an unchanged build leaves the folder alone.
        inputs = sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file())
        write_json_if_changed(tmp / "runtime.prov.json", {
            "format": "websd-provenance",
            "stage": STAGE,
            "outputs": [f"{u}.o" for u in UNITS],
            "tools": {"apache-tvm": version("apache-tvm"), "apache-tvm-ffi": version("apache-tvm-ffi"),
                      "emcc": tool},
            "options": {"cflags": [*CFLAGS, *(f"-I{d}" for d in INCLUDE_DIRS)]},
            "inputs": {str(p): sha256_file(tree / p) for p in inputs},
        })
    shutil.rmtree(tree, ignore_errors=True)
    print(f"{STAGE}: {out_dir} in {time.monotonic() - start:.0f} s (per unit, in parallel: {seconds})")


if __name__ == "__main__":
    run_stage(STAGE, main)

"""Shared by the build tests (test_build_*.py): one tiny build of every family per session, and helpers to run
make, copy a build, read build.log and load a compiled submodule.

    make test-python                                    (what `make test` runs: the shared test build)
    .venv/bin/python -m pytest tests/python -q          (a build of its own, in a temporary folder)
    WEBSD_TEST_ARTIFACTS=build/test-artifacts .venv/bin/python -m pytest tests/python/test_build_parity.py -q

The session build is `make sd15 sdxl WEIGHTS=tiny TARGETS="webgpu cpu"` (the CPU libraries are what the parity
tests compare; `tiny_build` is SD 1.5's view of it, `tiny_build.of("sdxl")` SDXL's) into a pytest temporary
folder, with an empty tuning folder of its own (so a tuning log checked into artifacts/tuning/ does not change
what the tests see). With WEBSD_TEST_ARTIFACTS set, it goes there instead and
is kept between sessions: make brings it up to date, which costs nothing when nothing changed. `make test` builds
it once there (build/test-artifacts) for pytest, the node tests and the browser tests alike. Tests that change a
build work on a copy of the variant folder (`cp -a` keeps mtimes, so make sees the copy exactly as up to date as
the original).

With WEBSD_TEST_DURATIONS set to a file, each test's time (setup, call and teardown) is written there, one JSON
line per test, for tests/tools/slowest.py.

make and the stage scripts run in a snapshot of the source tree taken when the session starts (the files git
tracks or would track, mtimes kept; .venv and node_modules linked): an edit to stages/ while the tests run
would otherwise make a build that a test expects to be up to date stale for a reason of its own. Python code
the tests import in-process (the torch wrappers, CompiledPipeline, reference) comes from the tree itself.

test_webgpu.py builds on the same session build; the noise, tokenizer and scheduler tests use none of this.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ROOT / "stages"
if str(STAGES) not in sys.path:
    sys.path.insert(0, str(STAGES))  # as the stage scripts see it: `lib.cli`, `reference`

VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
from lib.cli import library_name  # noqa: E402
from lib.models import FAMILIES, family  # noqa: E402

# The session build holds every family's tiny model; most build tests work on SD 1.5's, whose submodules and
# libraries come from the one table (stages/lib/models.py), as make's do.
MODEL = "sd15"
VARIANT = "sd15-tiny"
SUBMODULES = tuple(s.name for s in family(MODEL).submodules)
# Each submodule's libraries: the float32 one, and a float16 one for those that have it.
LIBRARIES = tuple(library_name(s.name, c) for s, c in family(MODEL).libraries())
WEIGHTED = tuple(s.name for s in family(MODEL).submodules if s.folder)
# Variables the Makefile reads with ?=: one set in the caller's environment would change what a test runs.
MAKE_VARIABLES = ("WEIGHTS", "MODEL", "VARIANT", "ARTIFACTS", "TUNING", "TARGETS", "PY", "V", "PROMPT", "NEGATIVE",
                  "SEED", "STEPS", "SCHEDULER", "GUIDANCE", "OUT", "PARAM_STORAGE", "WINOGRAD", "JOBS")
# What the test builds compile: the page's WebGPU libraries, and the CPU libraries the parity tests compare.
TEST_TARGETS = "webgpu cpu"
# `say` in the Makefile prints one line per stage run: two spaces, the stage in capitals, its folder.
STAGE_LINE = re.compile(r"^  [A-Z][A-Z-]+ +\S", re.MULTILINE)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child make: no inherited make flags (`make test` sets MAKEFLAGS) or variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in MAKE_VARIABLES and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(extra)
    return env


# Dawn on Vulkan without a GPU: SwiftShader (Chromium's CPU driver) for float32, lavapipe (Mesa's, fetched by
# `make setup`: tests/tools/fetch_lavapipe.sh) where shader-f16 is needed.
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"
LAVAPIPE_ICD = ROOT / "build" / "lavapipe" / "icd.json"


def lavapipe_env(runtime_dir: Path) -> dict[str, str]:
    """The environment for a node process on lavapipe. LP_NUM_THREADS=0 runs its work on the calling thread: with
    its default of a worker thread per core, on two cores, an attention kernel took 320 s instead of 1 and the
    tiny CLIP and UNet calls 280 s instead of 13 (measured 2026-11-30, Mesa 25.0.7)."""
    return clean_env(VK_ICD_FILENAMES=str(LAVAPIPE_ICD), XDG_RUNTIME_DIR=str(runtime_dir), LP_NUM_THREADS="0")


def make_command(*args: str, **variables) -> list[str]:
    return ["make", "--no-print-directory", *args, *(f"{k}={v}" for k, v in variables.items())]


def run_make(*args: str, tree: Path, timeout: float = 900, **variables) -> subprocess.CompletedProcess:
    """`make ARGS VAR=value ...` in the source tree `tree`; stdout and stderr captured as text."""
    return subprocess.run(make_command(*args, **variables), cwd=tree, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_stage(script: str, *args, tree: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`.venv/bin/python stages/<script>.py ARGS` in the source tree `tree`."""
    return subprocess.run([PY, f"stages/{script}.py", *map(str, args)], cwd=tree, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def snapshot_tree(dest: Path) -> Path:
    """Copies the source tree (what `git ls-files -co --exclude-standard` lists, mtimes kept) to `dest`, with
    links to the installed .venv and node_modules and a copy of the setup stamp under build/."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # tracked but deleted files are listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for installed in (".venv", "node_modules"):
        if (ROOT / installed).exists():
            (dest / installed).symlink_to(ROOT / installed)
    if (ROOT / "build" / ".apt.stamp").exists():
        (dest / "build").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "build" / ".apt.stamp", dest / "build" / ".apt.stamp")
    return dest


def stage_lines(output: str) -> list[str]:
    """The stage lines make printed (what it ran), spaces collapsed: `TRACE artifacts/sd15-tiny/unet`."""
    return [" ".join(line.split()) for line in output.splitlines() if STAGE_LINE.match(line)]


def log_entries(variant_dir: Path) -> list[tuple[str, str]]:
    """build.log as (stage, submodule) pairs, oldest first; the submodule is '-' for per-variant stages."""
    log = Path(variant_dir) / "build.log"
    if not log.exists():
        return []
    return [tuple(line.split()[1:3]) for line in log.read_text().splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (mtime_ns, size)} of every file below `folder`, hidden stamps included."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def relative_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    norm = np.linalg.norm(ref.ravel())
    assert norm > 0, "the reference is all zeros: nothing is being compared"
    return float(np.linalg.norm((ours - ref).ravel()) / norm)


def stored_weights(module, cache_meta: dict):
    """`module` (PyTorch) with its float32 weights rounded as the tensor cache stores them (float16 by default;
    the compiled library gets them widened back, exactly). Compared with the compiled library, it measures the
    compiled code alone; the unrounded module measures the code and the storage together. Rounding the
    checkpoint tensors equals rounding the library's parameters while the lifted parameter transform only
    moves values (transposes, reshapes, a gather: true of every submodule today)."""
    import torch

    storage = cache_meta["storage_dtype"]
    if storage != "float32":
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.dtype == torch.float32:
                    tensor.copy_(tensor.to(getattr(torch, storage)).float())
    return module


class Compiled:
    """One library's CPU build (`unet`, or its float16 library `unet-f16`) and its submodule's tensor cache, loaded
    as CompiledPipeline loads them (`stored`: in the
    cache's param_names order; `params`: through the library's load-time transform, where it has one); calling
    a function appends `params` after the inputs."""

    def __init__(self, variant_dir: Path, library: str):
        import tvm
        from tvm import relax

        from lib.cli import ArtifactPaths
        from lib.relax_io import load_meta
        from lib.tensor_cache import load_params, prepare_params

        self.tvm = tvm
        paths = ArtifactPaths(Path(variant_dir), library)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(paths.lib("cpu"))), tvm.cpu())
        self.meta = load_meta(paths.lowered, f"make {paths.family} WEIGHTS=tiny")
        self.params, self.cache_meta, self.stored = [], None, []
        if family(paths.family).submodule(paths.base_submodule).folder:
            (fmeta,) = [f for f in self.meta["functions"].values() if f["params"]]
            self.stored, self.cache_meta = load_params(paths.params_dir, tvm.cpu(), [p["dtype"] for p in fmeta["params"]])
            self.params = prepare_params(self.vm, self.meta, self.stored)

    def __call__(self, function: str, *inputs) -> np.ndarray:
        # np.asarray, not np.ascontiguousarray: that one turns the 0-d timestep and guidance into 1-d.
        args = [self.tvm.runtime.tensor(np.asarray(x, order="C")) for x in inputs]
        result = self.vm[function](*args, *self.params)
        # A function with several outputs (SDXL's second text encoder: hidden states, pooled) returns a tuple.
        return result.numpy() if hasattr(result, "numpy") else tuple(r.numpy() for r in result)


@dataclass(frozen=True)
class Build:
    tree: Path  # the source tree make runs in
    artifacts: Path  # the ARTIFACTS folder
    tuning: Path  # the TUNING folder it was built with
    model: str = MODEL  # the family `variant` and `weights` are of

    def of(self, model: str) -> "Build":
        """The same build, seen as its `model` family's tiny variant."""
        return dataclasses.replace(self, model=model)

    @property
    def variant(self) -> Path:
        return self.artifacts / f"{self.model}-tiny"

    @property
    def weights(self) -> Path:
        return self.variant / "weights"

    def make(self, *args: str, **variables) -> subprocess.CompletedProcess:
        """make in this build's ARTIFACTS, WEIGHTS=tiny, TUNING and TARGETS unless given."""
        return run_make(*args, tree=self.tree, **self.variables(**variables))

    def variables(self, **variables) -> dict:
        return {"WEIGHTS": "tiny", "ARTIFACTS": self.artifacts, "TUNING": self.tuning, "TARGETS": TEST_TARGETS,
                **variables}


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """The session's snapshot of the source tree: where make and the stage scripts run."""
    return snapshot_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="session")
def tiny_build(tree, tmp_path_factory) -> Build:
    """`make sd15 sdxl WEIGHTS=tiny` (every family), once per session; as SD 1.5's (`.of("sdxl")` for SDXL's). Tests must not change it: use `build_copy` for that."""
    keep = os.environ.get("WEBSD_TEST_ARTIFACTS")
    artifacts = Path(keep).resolve() if keep else tmp_path_factory.mktemp("artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    tuning = artifacts.parent / f"{artifacts.name}-tuning"  # empty: no tuned kernels
    tuning.mkdir(parents=True, exist_ok=True)
    # TVM's web runtime depends on the TVM version only: start from the repository's copy when there is one
    # (cp -a; make still checks its stamp against its sources and rebuilds it if stale).
    runtime = ROOT / "artifacts" / "tvm-runtime"
    if runtime.is_dir() and not (artifacts / runtime.name).exists():
        subprocess.run(["cp", "-a", str(runtime), str(artifacts / runtime.name)], check=True)
    build = Build(tree, artifacts, tuning)
    result = build.make(*FAMILIES)
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(FAMILIES)} WEIGHTS=tiny ARTIFACTS={artifacts} failed (exit {result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}", pytrace=False)
    return build


@pytest.fixture
def build_copy(tiny_build, tmp_path):
    """Returns a function that copies the session build's variant folder into a fresh ARTIFACTS folder
    (`cp -a`: mtimes kept), as `variant` (a WEIGHTS=<folder> build is named after the model), with the TVM web
    runtime beside it (else make would rebuild it: a minute), and gives the copy as a Build with the same
    TUNING. `model` picks the family (SD 1.5 by default); `also` names other families whose tiny variants are
    copied beside it unchanged."""

    def copy(name: str = "artifacts", variant: str | None = None, model: str = MODEL, also=()) -> Build:
        artifacts = tmp_path / name
        artifacts.mkdir()
        runtime = tiny_build.artifacts / "tvm-runtime"
        if runtime.is_dir():  # per ARTIFACTS folder, outside the variant
            subprocess.run(["cp", "-a", str(runtime), str(artifacts / runtime.name)], check=True)
        source = tiny_build.of(model).variant
        subprocess.run(["cp", "-a", str(source), str(artifacts / (variant or source.name))], check=True)
        for other in also:
            other_variant = tiny_build.of(other).variant
            subprocess.run(["cp", "-a", str(other_variant), str(artifacts / other_variant.name)], check=True)
        return Build(tiny_build.tree, artifacts, tiny_build.tuning, model)

    return copy


# ---- durations, for `make test`'s list of the slowest tests -----------------------------------------------------

_durations: dict[str, float] = {}
_failed: set[str] = set()


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.failed:
        _failed.add(report.nodeid)


def pytest_sessionfinish(session):
    out = os.environ.get("WEBSD_TEST_DURATIONS")
    if out and _durations and not hasattr(session.config, "workerinput"):  # the controller, under pytest-xdist
        import json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("".join(json.dumps({"file": nodeid.split("::")[0], "name": nodeid, "seconds": seconds,
                                                 "passed": nodeid not in _failed}) + "\n"
                                         for nodeid, seconds in _durations.items()))

"""Shared by the build tests (test_build_*.py): one tiny SD 1.5 build per session, and helpers to run make,
copy a build, read build.log and load a compiled submodule.

    .venv/bin/python -m pytest tests/python -q
    WEBSD_TEST_ARTIFACTS=build/test-artifacts .venv/bin/python -m pytest tests/python/test_build_parity.py -q

The session build is `make sd15 WEIGHTS=tiny` into a pytest temporary folder, with an empty tuning folder of
its own (so a tuning log checked into artifacts/tuning/ does not change what the tests see). With
WEBSD_TEST_ARTIFACTS set, it goes there instead and is kept between sessions: make brings it up to date, which
costs nothing when nothing changed. Tests that change a build work on a copy of the variant folder (`cp -a`
keeps mtimes, so make sees the copy exactly as up to date as the original).

The other tests in this folder (noise, tokenizer, schedulers) use none of this.
"""

from __future__ import annotations

import json
import os
import re
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
MODEL = "sd15"
VARIANT = "sd15-tiny"
SUBMODULES = ("clip", "unet", "vae", "sched")
WEIGHTED = ("clip", "unet", "vae")
# Variables the Makefile reads with ?=: one set in the caller's environment would change what a test runs.
MAKE_VARIABLES = ("WEIGHTS", "MODEL", "VARIANT", "ARTIFACTS", "TUNING", "PY", "V", "PROMPT", "NEGATIVE", "SEED",
                  "STEPS", "SCHEDULER", "GUIDANCE", "OUT")
# `say` in the Makefile prints one line per stage run: two spaces, the stage in capitals, its folder.
STAGE_LINE = re.compile(r"^  [A-Z][A-Z-]+ +\S", re.MULTILINE)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child make: no inherited make flags (`make test` sets MAKEFLAGS) or variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in MAKE_VARIABLES and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(extra)
    return env


def run_make(*args: str, timeout: float = 900, **variables) -> subprocess.CompletedProcess:
    """`make ARGS VAR=value ...` in the repository root; stdout and stderr captured as text."""
    cmd = ["make", "--no-print-directory", *args, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def run_stage(script: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`.venv/bin/python stages/<script>.py ARGS` in the repository root."""
    return subprocess.run([PY, str(STAGES / f"{script}.py"), *map(str, args)], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


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


class Compiled:
    """One submodule's CPU library and tensor cache, loaded as CompiledPipeline loads them; calling a function
    appends the weights (in the cache's param_names order) after the inputs."""

    def __init__(self, variant_dir: Path, submodule: str):
        import tvm
        from tvm import relax
        from tvm.contrib import tvmjs

        from lib.cli import ArtifactPaths

        self.tvm = tvm
        paths = ArtifactPaths(Path(variant_dir), submodule)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(paths.lib("cpu"))), tvm.cpu())
        self.meta = json.loads(paths.lowered.read_text())["meta"]
        self.params, self.cache_meta = [], None
        if submodule in WEIGHTED:
            tensors, self.cache_meta = tvmjs.load_tensor_cache(str(paths.params_dir), tvm.cpu())
            self.params = [tensors[name] for name in self.cache_meta["param_names"]]

    def __call__(self, function: str, *inputs) -> np.ndarray:
        # np.asarray, not np.ascontiguousarray: that one turns the 0-d timestep and guidance into 1-d.
        args = [self.tvm.runtime.tensor(np.asarray(x, order="C")) for x in inputs]
        return self.vm[function](*args, *self.params).numpy()


@dataclass(frozen=True)
class Build:
    artifacts: Path  # the ARTIFACTS folder
    tuning: Path  # the TUNING folder it was built with

    @property
    def variant(self) -> Path:
        return self.artifacts / VARIANT

    @property
    def weights(self) -> Path:
        return self.variant / "weights"

    def make(self, *args: str, **variables) -> subprocess.CompletedProcess:
        """make in this build's ARTIFACTS, WEIGHTS=tiny and TUNING unless given."""
        variables = {"WEIGHTS": "tiny", "ARTIFACTS": self.artifacts, "TUNING": self.tuning, **variables}
        return run_make(*args, **variables)

    def refresh(self) -> None:
        """`make sd15`: builds it, or brings it up to date (nothing to do unless stages/ changed)."""
        result = self.make(MODEL)
        if result.returncode != 0:
            pytest.fail(f"make {MODEL} WEIGHTS=tiny ARTIFACTS={self.artifacts} failed (exit {result.returncode}):\n"
                        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> Build:
    """`make sd15 WEIGHTS=tiny`, once per session. Tests must not change it: use `build_copy` for that."""
    keep = os.environ.get("WEBSD_TEST_ARTIFACTS")
    artifacts = Path(keep).resolve() if keep else tmp_path_factory.mktemp("artifacts")
    tuning = artifacts.parent / f"{artifacts.name}-tuning"  # empty: no tuned kernels
    tuning.mkdir(parents=True, exist_ok=True)
    # TVM's web runtime depends on the TVM version only: start from the repository's copy when there is one
    # (cp -a; make still checks its stamp against its sources and rebuilds it if stale).
    runtime = ROOT / "artifacts" / "tvm-runtime"
    if runtime.is_dir() and not (artifacts / runtime.name).exists():
        subprocess.run(["cp", "-a", str(runtime), str(artifacts / runtime.name)], check=True)
    build = Build(artifacts, tuning)
    build.refresh()
    return build


@pytest.fixture
def build_copy(tiny_build, tmp_path):
    """Returns a function that copies the session build's variant folder into a fresh ARTIFACTS folder
    (`cp -a`: mtimes kept) and gives the copy as a Build with the same TUNING."""

    def copy(name: str = "artifacts") -> Build:
        # Other people edit stages/ in this tree while tests run: an edit since the session build makes it
        # stale, and the copy would rebuild for that reason, not the test's. Bring it up to date first.
        tiny_build.refresh()
        artifacts = tmp_path / name
        artifacts.mkdir()
        runtime = tiny_build.artifacts / "tvm-runtime"
        if runtime.is_dir():  # per ARTIFACTS folder, outside the variant
            subprocess.run(["cp", "-a", str(runtime), str(artifacts / runtime.name)], check=True)
        subprocess.run(["cp", "-a", str(tiny_build.variant), str(artifacts / VARIANT)], check=True)
        return Build(artifacts, tiny_build.tuning)

    return copy

"""What every stage script shares: argument shape, artifact paths, atomic writes, provenance, errors.

Every stage is run by make as

    python stages/<stage>.py --variant-dir artifacts/<variant> [--submodule <name>] [stage options]

reads its inputs from fixed places under the variant folder (named by `ArtifactPaths`), writes its outputs
atomically and only when their bytes changed, records provenance beside them, and appends one line to
`artifacts/<variant>/build.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import filecmp
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Bump when the layout or meaning of an artifact changes; the version is part of every artifact's name,
# so an old build is never read as a new one.
ARTIFACT_VERSION = 1


class StageError(Exception):
    """A failure the user can fix; the message says what is wrong and which command fixes it."""


# A submodule's float16 library (float16 weights and activations, float32 accumulation; for adapters with the
# WebGPU feature shader-f16) is built beside its float32 one under the submodule's name + this suffix:
# artifacts/sd15-tiny/unet-f16/ holds the lowered, scheduled and compiled forms of unet's float16 library.
FLOAT16_SUFFIX = "-f16"


def split_library(name: str) -> tuple[str, str]:
    """'unet-f16' -> ('unet', 'float16'); 'unet' -> ('unet', 'float32')."""
    if name.endswith(FLOAT16_SUFFIX):
        return name[: -len(FLOAT16_SUFFIX)], "float16"
    return name, "float32"


def library_name(submodule: str, compute: str) -> str:
    return submodule + (FLOAT16_SUFFIX if compute == "float16" else "")


@dataclass(frozen=True)
class ArtifactPaths:
    """Where each stage's files live: artifacts/<variant>/<library>/<file>.v<version>.<ext>.

    `submodule` may name a submodule's float16 library ('unet-f16'): its lowered, scheduled and compiled
    forms live in their own folder, while the traced module, the parameter transform and the weights are the
    submodule's (one download serves both libraries)."""

    variant_dir: Path
    submodule: str | None = None

    @property
    def variant(self) -> str:
        return self.variant_dir.name

    @property
    def family(self) -> str:
        """The model family is the variant name up to the first '-': sd15-tiny -> sd15."""
        return self.variant.split("-", 1)[0]

    @property
    def base_submodule(self) -> str:
        """The submodule this library is of ('unet' for 'unet-f16')."""
        assert self.submodule, "this artifact belongs to a submodule"
        return split_library(self.submodule)[0]

    @property
    def compute(self) -> str:
        """The dtype the library computes in: float32, or float16 for a '-f16' library."""
        return split_library(self.submodule)[1]

    @property
    def sub_dir(self) -> Path:
        assert self.submodule, "this artifact belongs to a submodule"
        return self.variant_dir / self.submodule

    def _file(self, stem: str, ext: str, folder: Path | None = None) -> Path:
        return (folder or self.sub_dir) / f"{stem}.v{ARTIFACT_VERSION}.{ext}"

    # Per submodule, shared by its libraries, in build order.
    @property
    def traced(self) -> Path:
        return self._file("traced", "json", self.variant_dir / self.base_submodule)

    @property
    def transform_params(self) -> Path:
        return self._file("transform_params", "json", self.variant_dir / self.base_submodule)

    # Per library.
    @property
    def lowered(self) -> Path:
        return self._file("lowered", "json")

    def scheduled(self, target: str) -> Path:
        return self._file(f"scheduled.{target}", "json")

    def lib(self, target: str) -> Path:
        return self._file(f"lib.{target}", "so" if target == "cpu" else "tar")

    @property
    def subgroup_matrix_kernels(self) -> Path:
        """A float16 library's tensor-core kernels (stages/lib/subgroup_matrix.py), beside its WebGPU objects."""
        return self._file("subgroup-matrix", "json")

    @property
    def params_dir(self) -> Path:
        return self.variant_dir / self.base_submodule / f"params.v{ARTIFACT_VERSION}"

    # Per variant.
    @property
    def weights_dir(self) -> Path:
        """Generated weights (WEIGHTS=tiny|random) live here, in diffusers' save_pretrained layout."""
        return self.variant_dir / "weights"

    @property
    def scheduler_dir(self) -> Path:
        return self.variant_dir / f"scheduler.v{ARTIFACT_VERSION}"

    @property
    def tokenizer_dir(self) -> Path:
        return self.variant_dir / f"tokenizer.v{ARTIFACT_VERSION}"

    @property
    def build_log(self) -> Path:
        return self.variant_dir / "build.log"


def stage_parser(description: str, *, submodule: bool = True, weights: bool = False) -> argparse.ArgumentParser:
    """The argument shape every stage shares; stages add their own options after it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variant-dir", type=Path, required=True, help="artifacts/<variant>, e.g. artifacts/sd15-tiny")
    if submodule:
        parser.add_argument("--submodule", required=True,
                            help=f"a submodule of the family (stages/lib/models.py: clip, clip2, unet, vae, sched); with "
                                 f"{FLOAT16_SUFFIX}, its float16 library (unet{FLOAT16_SUFFIX})")
    if weights:
        parser.add_argument("--weights", type=Path, required=True, help="diffusers folder (save_pretrained layout)")
    return parser


def paths_from(args: argparse.Namespace) -> ArtifactPaths:
    paths = ArtifactPaths(args.variant_dir, getattr(args, "submodule", None))
    if paths.submodule is not None:
        # An unknown model or submodule is named as such, before any stage looks for its (missing) inputs.
        from .models import family

        family(paths.family).library(paths.submodule)
    return paths


def run_stage(stage: str, main, *, uses_torch: bool = True) -> None:
    """Runs a stage's main(); a StageError becomes one line on stderr and exit status 1, no traceback.

    uses_torch=False keeps torch out of a stage that works with TVM alone: tvm_ffi imports torch whenever it is
    installed (for tensor exchange these stages never do), and that is most of a stage's start-up (importing tvm:
    4.7 s with torch, 1.4 s without, measured here), paid by a hundred stage runs per build of both families. A
    stage that imports torch after all then fails at once, with ImportError."""
    if not uses_torch:
        sys.modules.setdefault("torch", None)  # `import torch` now raises ImportError
    try:
        main()
    except StageError as err:
        print(f"error: {stage}: {err}", file=sys.stderr)
        sys.exit(1)


def log_stage(paths: ArtifactPaths, stage: str) -> None:
    """Appends `<time> <stage> <submodule>` to the variant's build.log, so a user sees what was rebuilt."""
    paths.variant_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    line = f"{now} {stage} {paths.submodule or '-'}\n"
    with open(paths.build_log, "a", encoding="utf-8") as log:
        log.write(line)


def require(path: Path, made_by: str) -> Path:
    """Stops with a message naming the make target that produces a missing input."""
    if not path.exists():
        raise StageError(f"missing input {path}; it is made by `{made_by}`")
    return path


# ----------------------------------------------------------------------------------------------------------
# Atomic, write-if-changed outputs. A half-written file never carries the final name: everything is written
# to a temporary name in the same folder and renamed. Unchanged content keeps the old file and its mtime, so
# make does not rebuild dependents for nothing.


# mkstemp/mkdtemp create owner-only files; artifacts are served to browsers and copied for deployment, so
# they get the ordinary umask-derived modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def _temp_prefix(path: Path) -> str:
    """Temporaries of `path` are `.<name>.<pid>.<random>.tmp` beside it: hidden, and traceable to their writer."""
    return f".{path.name}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Removes the temporaries of `path` whose writer is gone (a killed build leaves them); a live writer's stay."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Returns True when the file was (re)written."""
    path = Path(path)
    remove_stale_temporaries(path)
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def write_json_if_changed(path: Path, obj) -> bool:
    return write_bytes_if_changed(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def file_if_changed(path: Path):
    """Yields a temporary path to write a file to (for writers that want a path, like export_library);
    on success it replaces `path` only when the bytes differ."""
    path = Path(path)
    remove_stale_temporaries(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    try:
        tmp = tmp_dir / path.name
        yield tmp
        if not (path.exists() and filecmp.cmp(tmp, path, shallow=False)):
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


@contextlib.contextmanager
def dir_if_changed(path: Path):
    """Yields a temporary folder to fill; on success it takes the place of `path` only when some file
    differs. The swap is two renames, so `path` is either the old complete folder or the new one."""
    path = Path(path)
    remove_stale_temporaries(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        if path.exists() and _same_tree(tmp, path):
            return
        os.chmod(tmp, _FILE_MODE | 0o111)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Provenance: what an artifact was made from, written beside it as <artifact>.prov.json.


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while block := src.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("torch", "apache-tvm", "diffusers", "transformers", "safetensors", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def write_provenance(artifact: Path, stage: str, inputs: list[Path], options: dict | None = None) -> None:
    """Records input hashes, tool versions and stage options beside `artifact`. Inputs that are folders
    are hashed file by file."""
    hashes = {}
    for item in inputs:
        item = Path(item)
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for f in files:
            hashes[str(f)] = sha256_file(f)
    record = {
        "format": "websd-provenance",
        "version": ARTIFACT_VERSION,
        "artifact": str(artifact),
        "stage": stage,
        "inputs": hashes,
        "options": options or {},
        "tools": tool_versions(),
    }
    write_json_if_changed(Path(f"{artifact}.prov.json"), record)

"""Relax modules on disk: a JSON envelope with a format name, a version and the module's own metadata,
around TVM's JSON serialisation of the IRModule. Readers check format and version before anything else."""

from __future__ import annotations

import json
from pathlib import Path

from .cli import ARTIFACT_VERSION, StageError, write_bytes_if_changed

FORMAT = "websd-relax-module"
# The source tree, as the hand-written kernels' TVMScript spans name their files.
SOURCE_ROOT = str(Path(__file__).resolve().parents[2]) + "/"


def save_module(path: Path, mod, meta: dict) -> bool:
    import tvm

    envelope = {"format": FORMAT, "version": ARTIFACT_VERSION, "meta": meta, "ir": _portable(tvm.ir.save_json(mod))}
    return write_bytes_if_changed(path, json.dumps(envelope, sort_keys=True).encode())


def _portable(ir_json: str) -> str:
    """TVM's serialisation with source file names (spans of the kernels written in TVMScript) relative to the
    source tree: the same code builds the same bytes from any checkout, so make does not redo what follows."""
    document = json.loads(ir_json)
    for node in document.get("nodes", []):
        if node.get("type") == "ir.SourceName" and str(node.get("data", "")).startswith(SOURCE_ROOT):
            node["data"] = node["data"][len(SOURCE_ROOT):]
    return json.dumps(document, separators=(",", ":"))


def load_module(path: Path, made_by: str):
    """Returns (IRModule, meta). `made_by` is the make target that writes `path`, for the error message."""
    import tvm

    envelope = _read_envelope(path, made_by)
    return tvm.ir.load_json(envelope["ir"]), envelope["meta"]


def load_meta(path: Path, made_by: str) -> dict:
    """The module file's metadata alone (functions, their inputs and weights), checked as load_module checks it."""
    return _read_envelope(path, made_by)["meta"]


def _read_envelope(path: Path, made_by: str) -> dict:
    if not Path(path).exists():
        raise StageError(f"missing {path}; it is made by `{made_by}`")
    try:
        envelope = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path} is not a readable module file ({err}); remove it and run `{made_by}`") from None
    if envelope.get("format") != FORMAT or envelope.get("version") != ARTIFACT_VERSION:
        raise StageError(f"{path} has format {envelope.get('format')} v{envelope.get('version')}, expected "
                         f"{FORMAT} v{ARTIFACT_VERSION}; remove it and run `{made_by}`")
    return envelope

"""The weights' tensor cache (`<submodule>/params.v1/`): how parameters are stored, and reading them back.

dump-params stores float32 parameters as float16 by default (half the download). A submodule's libraries
take them in their own dtypes: the float32 library float32 (metadata.param_dtypes, in `param_names` order,
records those), its float16 library (`<submodule>-f16`) float16 (its lowered module's metadata says so). A
reader converts each record from the dtype it is stored in to the one the library takes: widening float16 ->
float32 is exact, so every runtime (this module for the CPU pipeline and the tests, web/runtime/params.js
for WebGPU) hands a library bit-identical weights; narrowing float32 -> float16 (float32 shards for a
float16 library) rounds to nearest even, as numpy and params.js both do.

    tensors, meta = load_params(paths.params_dir, tvm.cpu(), dtypes)   # stored order, the library's dtypes
    tensors = prepare_params(vm, lowered_meta, tensors)                # as the compiled function takes them
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cli import StageError

STORAGE_DTYPES = ("float16", "float32")
# (stored, taken by the library) pairs a reader may convert; anything else is a broken or foreign cache.
CONVERSIONS = {("float16", "float32"), ("float32", "float16")}
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def narrow_to_float16(value: np.ndarray, what: str, fix: str) -> np.ndarray:
    """float32 -> float16, stopping with `fix` where a finite value would become inf."""
    with np.errstate(over="ignore"):
        narrowed = value.astype(np.float16)
    overflow = np.isinf(narrowed) & np.isfinite(value)
    if overflow.any():
        worst = float(np.abs(value[overflow]).max())
        raise StageError(f"{what} has {int(overflow.sum())} value(s) beyond float16's range (largest magnitude "
                         f"{worst:.6g} > {FLOAT16_MAX:g}), which float16 would hold as inf; {fix}")
    return narrowed


def to_storage(value: np.ndarray, storage_dtype: str, what: str) -> np.ndarray:
    """`value` as it will be stored: float32 narrowed to `storage_dtype`, other dtypes as they are. A finite
    value beyond float16's range stops the build rather than being stored as inf (or clamped): either would
    change the model's output without a word, and a weight that large means the checkpoint is not an ordinary
    Stable Diffusion one (SD 1.5's largest weights are in the tens), so the user should choose float32."""
    if storage_dtype == "float32" or value.dtype != np.float32:
        return value
    assert storage_dtype == "float16", storage_dtype
    return narrow_to_float16(value, what, "store this model's weights as float32 (make ... PARAM_STORAGE=float32, "
                                          "or dump_params.py --storage-dtype float32)")


def library_dtypes(meta: dict, where) -> dict[str, str]:
    """{parameter name: dtype the compiled library takes} from a cache's metadata."""
    names, dtypes = meta.get("param_names", []), meta.get("param_dtypes")
    if dtypes is None or len(dtypes) != len(names):
        raise StageError(f"{where}: the tensor cache does not say which dtype the library takes for each of its "
                         f"{len(names)} parameters (metadata.param_dtypes); rebuild it with `make`")
    return dict(zip(names, dtypes))


def load_params(params_dir: Path, device, dtypes: list[str] | None = None):
    """Returns ([tvm tensor per parameter, in metadata.param_names order, in the library's dtype], metadata).
    `dtypes`: what the library takes, per parameter in that order (its lowered metadata's `params`); None:
    the float32 library's (metadata.param_dtypes). Reads one shard at a time, converts one tensor at a time."""
    import tvm

    params_dir = Path(params_dir)
    cache_json = params_dir / "tensor-cache.json"
    cache = json.loads(cache_json.read_text())
    meta = cache["metadata"]
    wanted = library_dtypes(meta, cache_json)
    if dtypes is not None:
        if len(dtypes) != len(meta["param_names"]):
            raise StageError(f"{cache_json} holds {len(meta['param_names'])} parameters, the library takes "
                             f"{len(dtypes)}; rebuild with `make`")
        wanted = dict(zip(meta["param_names"], dtypes))
    tensors = {}
    for shard in cache["records"]:
        data = (params_dir / shard["dataPath"]).read_bytes()
        if shard["format"] != "raw-shard" or len(data) != shard["nbytes"]:
            raise StageError(f"{params_dir / shard['dataPath']}: not the shard tensor-cache.json describes; "
                             f"rebuild it with `make`")
        for rec in shard["records"]:
            name, stored = rec["name"], rec["dtype"]
            if rec["format"] != "raw":
                raise StageError(f"{cache_json}: {name} has encoding {rec['format']}, expected raw")
            if name not in wanted:
                continue
            if stored != wanted[name] and (stored, wanted[name]) not in CONVERSIONS:
                raise StageError(f"{cache_json}: {name} is stored as {stored}, the library takes {wanted[name]}")
            array = np.frombuffer(data, dtype=np.dtype(stored).newbyteorder("<"), count=int(np.prod(rec["shape"])),
                                  offset=rec["byteOffset"]).reshape(rec["shape"])
            if (stored, wanted[name]) == ("float32", "float16"):
                array = narrow_to_float16(array, f"{cache_json}: {name}", "this model needs its float32 library")
            tensors[name] = tvm.runtime.tensor(array.astype(wanted[name]), device)
    missing = [n for n in meta["param_names"] if n not in tensors]
    if missing:
        raise StageError(f"{cache_json}: no tensor named {missing[0]} ({len(missing)} missing)")
    return [tensors[n] for n in meta["param_names"]], meta


def prepare_params(vm, lowered_meta: dict, stored: list) -> list:
    """The weights as the library's weighted function takes them: through its load-time transform
    (`<function>_prepare`, named in the lowered module's metadata) where it has one, as
    web/runtime/tvm.js's prepareParams does on the GPU."""
    for fmeta in lowered_meta["functions"].values():
        if fmeta["params"] and fmeta.get("prepare"):
            return list(vm[fmeta["prepare"]](stored))
    return stored

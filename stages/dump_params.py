"""dump-params: one submodule's weights -> a tvmjs tensor cache (size-capped shards + tensor-cache.json).

    python stages/dump_params.py --variant-dir artifacts/sd15-tiny --submodule unet --weights DIR \
        [--storage-dtype float16|float32]

Reads the diffusers safetensors lazily (one tensor at a time, never a whole model twice), maps every
checkpoint tensor to a parameter of the traced function or to the submodule's declared unused list (anything
else stops the build), applies the build-time parameter transform that `transform` lifted out, and writes the
shards with an explicit encoding (tvmjs' default would silently store float32 as bfloat16). The cache's
metadata names the parameters in the order the compiled function takes them and the dtype the library takes
each in, with a sha256 per shard that the web runtime verifies.

Storage: float32 parameters are stored as float16 by default (half the download; the libraries still compute
in float32, and the runtimes widen each tensor exactly as they load it: stages/lib/tensor_cache.py,
web/runtime/params.js). `--storage-dtype float32` stores them as they are. A weight that float16 cannot hold
stops the stage, naming the checkpoint file and tensor (stages/lib/tensor_cache.py says why it is not clamped).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import (ARTIFACT_VERSION, StageError, dir_if_changed, log_stage, paths_from,  # noqa: E402
                     run_stage, sha256_file, stage_parser, write_provenance)
from lib.models import check_weights_folder, family, safetensors_files  # noqa: E402
from lib.relax_io import load_module  # noqa: E402
from lib.tensor_cache import STORAGE_DTYPES, to_storage  # noqa: E402

CACHE_FORMAT = "websd-tensor-cache"
SHARD_MB = 32


def read_checkpoint(folder: Path, wanted: dict[str, dict], unused_prefixes, storage_dtype: str) -> dict:
    """Returns {source name: numpy array} for `wanted`, in the traced dtype; every other tensor in the
    checkpoint must be declared unused. Each must fit `storage_dtype` (checked here, where the message can
    name the checkpoint tensor; the lifted transform renames what it computes)."""
    import numpy as np
    from safetensors import SafetensorError, safe_open

    found = {}
    for path in safetensors_files(folder):
        try:
            with safe_open(path, framework="numpy") as f:
                for key in f.keys():
                    if key not in wanted:
                        if key.startswith(tuple(unused_prefixes)):
                            continue
                        raise StageError(f"{path}: tensor {key!r} is neither a parameter of the traced model nor "
                                         f"declared unused (stages/lib/models.py); is this checkpoint for this model?")
                    spec = wanted[key]
                    value = f.get_tensor(key)
                    if list(value.shape) != spec["shape"]:
                        raise StageError(f"{path}: {key} has shape {list(value.shape)}, the model's config "
                                         f"expects {spec['shape']}; config.json and weights disagree")
                    found[key] = np.ascontiguousarray(value.astype(spec["dtype"]))
                    to_storage(found[key], storage_dtype, f"{path}: tensor {key!r}")
        except SafetensorError as err:
            raise StageError(f"{path} is not a readable safetensors file ({err}); re-save or re-download it") from None
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise StageError(f"{folder} lacks {len(missing)} weight(s) the model needs, e.g. {missing[0]!r}")
    return found


def transform_weights(transform_mod, name: str, source_params: list[dict], weights: dict):
    """Runs `<name>_transform_params` on the CPU; returns its outputs in the compiled function's order."""
    import tvm
    from tvm import relax

    executable = relax.build(tvm.IRModule({name: transform_mod[name]}), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    inputs = [tvm.runtime.tensor(weights.pop(p["source"])) for p in source_params]
    return [out.numpy() for out in vm[name](inputs)]


def main():
    parser = stage_parser(__doc__, weights=True)
    parser.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default="float16",
                        help="how float32 parameters are stored in the shards (the library takes float32 either way)")
    args = parser.parse_args()
    paths = paths_from(args)
    fam = family(paths.family)
    sub = fam.submodule(args.submodule)
    check_weights_folder(args.weights, fam)
    start = time.time()

    from tvm.contrib import tvmjs

    transform_mod, meta = load_module(paths.transform_params, f"make {paths.lowered}")
    (function, fmeta), = [(n, m) for n, m in meta["functions"].items() if m["params"]]
    sources = {p["source"]: p for p in fmeta["source_params"]}
    # Unused: what the table declares (stages/lib/models.py) and what trace found the function never reads.
    unused = tuple(sub.unused_prefixes) + tuple(fmeta.get("unused_sources", []))
    weights = read_checkpoint(args.weights / sub.folder, sources, unused, args.storage_dtype)
    values = transform_weights(transform_mod, fmeta["transform"], fmeta["source_params"], weights)

    names = []
    for i, p in enumerate(fmeta["params"]):
        names.append(p["name"] if p["name"] not in names else f"{p['name']}_{i}")
    for p, v in zip(fmeta["params"], values):
        assert list(v.shape) == p["shape"] and str(v.dtype) == p["dtype"], (p, v.shape, v.dtype)
    # In place, one tensor at a time: the float32 copy goes as its narrowed one comes (the full-size UNet's
    # dump is this stage's memory peak). The transform only moves values today (transposes, reshapes), so the
    # range check above already passed; this one guards a transform that computes.
    for i, name in enumerate(names):
        values[i] = to_storage(values[i], args.storage_dtype, f"{sub.name} parameter {name}")

    with dir_if_changed(paths.params_dir) as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines of its own
            tvmjs.dump_tensor_cache(dict(zip(names, values)), str(tmp), encode_format="raw",
                                    shard_cap_mb=SHARD_MB, show_progress=False)
        cache_json = tmp / "tensor-cache.json"
        cache = json.loads(cache_json.read_text())
        for shard in cache["records"]:
            shard["sha256"] = sha256_file(tmp / shard["dataPath"])
        cache["metadata"] = {
            "format": CACHE_FORMAT,
            "version": ARTIFACT_VERSION,
            "family": fam.name,
            "submodule": sub.name,
            "function": function,
            "param_names": names,
            "param_dtypes": [p["dtype"] for p in fmeta["params"]],
            "storage_dtype": args.storage_dtype,
            "total_bytes": sum(s["nbytes"] for s in cache["records"]),
        }
        cache_json.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")

    write_provenance(paths.params_dir, "dump-params", [paths.transform_params, *safetensors_files(args.weights / sub.folder)],
                     {"storage_dtype": args.storage_dtype})
    log_stage(paths, "dump-params")
    total = cache["metadata"]["total_bytes"]
    print(f"dump-params {paths.variant}/{sub.name}: {len(names)} tensors, {total / 2**20:.1f} MiB "
          f"({args.storage_dtype}) in "
          f"{len(cache['records'])} shard(s), {time.time() - start:.1f}s -> {paths.params_dir}")


if __name__ == "__main__":
    run_stage("dump-params", main)

"""dump-params: one submodule's weights -> a tvmjs tensor cache (size-capped shards + tensor-cache.json).

    python stages/dump_params.py --variant-dir artifacts/sd15-tiny --submodule unet --weights DIR \
        [--storage-dtype float16|float32]

Reads the diffusers safetensors lazily (one tensor at a time, as the transform asks for it), maps every
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


class Checkpoint:
    """The submodule's safetensors files, read one tensor at a time (`read(source)`), in the traced dtype and
    checked: every tensor in the files must be wanted or declared unused, every wanted one present with its
    traced shape (both from the headers, before any value is read), and each value must fit the storage dtype."""

    def __init__(self, folder: Path, wanted: dict[str, dict], unused_prefixes, storage_dtype: str, rename=None):
        from safetensors import SafetensorError, safe_open

        self.wanted, self.storage_dtype, self.files = wanted, storage_dtype, {}
        for path in safetensors_files(folder):
            try:
                handle = safe_open(path, framework="numpy")
                for stored_key in handle.keys():
                    key = rename(stored_key) if rename else stored_key  # the name the traced model uses
                    if key not in wanted:
                        if key.startswith(tuple(unused_prefixes)) or stored_key.startswith(tuple(unused_prefixes)):
                            continue
                        raise StageError(f"{path}: tensor {stored_key!r} is neither a parameter of the traced model nor "
                                         f"declared unused (stages/lib/models.py); is this checkpoint for this model?")
                    shape = list(handle.get_slice(stored_key).get_shape())
                    if shape != wanted[key]["shape"]:
                        raise StageError(f"{path}: {stored_key} has shape {shape}, the model's config expects "
                                         f"{wanted[key]['shape']}; config.json and weights disagree")
                    self.files[key] = (path, handle, stored_key)
            except SafetensorError as err:
                raise StageError(f"{path} is not a readable safetensors file ({err}); re-save or re-download it") from None
        missing = sorted(set(wanted) - set(self.files))
        if missing:
            raise StageError(f"{folder} lacks {len(missing)} weight(s) the model needs, e.g. {missing[0]!r}")

    def read(self, key: str):
        import numpy as np
        from safetensors import SafetensorError

        path, handle, stored_key = self.files[key]
        try:
            value = np.ascontiguousarray(handle.get_tensor(stored_key).astype(self.wanted[key]["dtype"]))
        except SafetensorError as err:
            raise StageError(f"{path} is not a readable safetensors file ({err}); re-save or re-download it") from None
        to_storage(value, self.storage_dtype, f"{path}: tensor {key!r}")
        return value


def transform_weights(transform_mod, name: str, source_params: list[dict], checkpoint: Checkpoint, store) -> int:
    """Runs `<name>_transform_params` on the CPU, streaming: TVM's LazyTransformParams makes it ask for each
    checkpoint tensor when it first needs it (`get_item`) and hand over each result as soon as it is made
    (`set_item`), freeing inputs after their last use; `store(index, numpy array)` takes each result (index in
    the compiled function's order). So the full-size SDXL UNet (10 GB of float32) is never in memory whole.
    Returns the number of results."""
    import tvm
    import tvm.relax.op.vm  # noqa: F401  (LazyTransformParams emits relax.op.vm.kill_object; TVM 0.27 does not import it)
    from tvm import relax

    T = relax.transform
    lazy = tvm.transform.Sequential([T.ToNonDataflow(), T.RemovePurityChecking(), T.LazyTransformParams()])(
        tvm.IRModule({name: transform_mod[name]}))
    count, failures = 0, []

    def get_item(index):
        try:
            return tvm.runtime.tensor(checkpoint.read(source_params[index]["source"]))
        except StageError as err:  # it reaches the caller through TVM's FFI as some other error
            failures.append(err)
            raise

    def set_item(index, value):
        nonlocal count
        try:
            store(int(index), value.numpy())
        except StageError as err:
            failures.append(err)
            raise
        count += 1

    tvm.register_global_func("get_item", get_item, override=True)
    tvm.register_global_func("set_item", set_item, override=True)
    # (after registering them: the VM looks its packed functions up when it loads)
    executable = relax.build(lazy, tvm.target.Target({"kind": "llvm"}))
    try:
        relax.VirtualMachine(executable, tvm.cpu())[name]()
    except Exception:
        if failures:
            raise failures[0] from None
        raise
    return count


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
    checkpoint = Checkpoint(args.weights / sub.folder, sources, unused, args.storage_dtype, sub.parameter_name)

    names = []
    for i, p in enumerate(fmeta["params"]):
        names.append(p["name"] if p["name"] not in names else f"{p['name']}_{i}")
    values = [None] * len(names)

    def store(index, value):
        # Narrowed as it comes, so only the stored form is kept. The transform only moves values today
        # (transposes, reshapes), so the check in Checkpoint.read already passed; this one guards a transform
        # that computes.
        p = fmeta["params"][index]
        assert list(value.shape) == p["shape"] and str(value.dtype) == p["dtype"], (p, value.shape, value.dtype)
        values[index] = to_storage(value, args.storage_dtype, f"{sub.name} parameter {names[index]}")

    made = transform_weights(transform_mod, fmeta["transform"], fmeta["source_params"], checkpoint, store)
    assert made == len(names) and all(v is not None for v in values), (made, len(names))

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
            # the checkpoint tensors the library's `<function>_transform_params` makes the parameters from
            "sources": [{"name": p["source"], "shape": p["shape"], "dtype": p["dtype"]} for p in fmeta["source_params"]],
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
    run_stage("dump-params", main, uses_torch=False)

"""manifest: one JSON per variant naming every file the runtimes load, with sizes and sha256s.

    python stages/write_manifest.py --variant-dir artifacts/sd15-tiny

The web page, its worker and the Node CLI read artifacts/<variant>/model.json and nothing else to find the
library, the tensor caches, the scheduler constants and the tokenizer, and which system library in the .wasm
serves each submodule in each compute dtype (`submodules.<sub>.libraries.float32|float16`); paths in it are
relative to it, so the variant folder can be served or copied as it is. Shapes and function names come from the lowered
modules' metadata, never from guesses in JavaScript.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import (ArtifactPaths, StageError, library_name, log_stage,  # noqa: E402
                     paths_from, run_stage, sha256_file, stage_parser, write_json_if_changed)
from lib import subgroup_matrix  # noqa: E402
from lib.models import family  # noqa: E402
from lib.relax_io import load_meta  # noqa: E402
from lib.schedulers import FILES  # noqa: E402

FORMAT = "websd-model"
# 2: each submodule lists its libraries per compute dtype (`libraries.float32|float16`).
# 3: families: `text_encoders` (each with its tokenizer and text length), `tokenizers` by folder, the family's
# schedulers and default, functions' output shapes. A page that reads another version says so rather than misread it.
VERSION = 3
# A submodule's libraries, by the dtype they compute in; a runtime takes the float16 one where the device
# has its features and the float32 one everywhere else.
FEATURES = {"float32": [], "float16": ["shader-f16"]}


def file_record(root: Path, path: Path, made_by: str) -> dict:
    if not path.exists():
        raise StageError(f"missing {path}; it is made by `{made_by}`")
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def main():
    args = stage_parser(__doc__, submodule=False).parse_args()
    paths = paths_from(args)
    fam = family(paths.family)
    root = paths.variant_dir
    make = f"make {fam.name} WEIGHTS=..."

    submodules = {}
    for sub in fam.submodules:
        libraries = {}
        for compute in sub.computes:
            meta = load_meta(ArtifactPaths(root, library_name(sub.name, compute)).lowered, make)
            libraries[compute] = {
                "prefix": fam.system_lib_prefix(sub.name, compute),
                # the WebGPU features a device needs to run it
                "features": FEATURES[compute],
                # the largest GPU buffer the library needs (weights, prepared weights or activations)
                "largest_tensor_bytes": meta["largest_tensor_bytes"],
                # param_dtypes: what the library takes for each stored weight (readers convert the shards'
                # dtype to it); prepare: the library function that turns them into what the function takes
                # (run once after loading), where there is one; transform: the one that makes the stored
                # weights from checkpoint tensors (the weights index's metadata.sources lists them), for tools
                # that start from diffusers' layout (the benchmark)
                "functions": {name: {"inputs": f["inputs"], "outputs": f["outputs"], "num_params": len(f["params"]),
                                     **({"param_dtypes": [p["dtype"] for p in f["params"]]} if f["params"] else {}),
                                     **({"prepare": f["prepare"]} if f.get("prepare") else {}),
                                     **({"transform": f["transform"]} if f.get("transform") else {})}
                              for name, f in meta["functions"].items()},
            }
        if "float16" in libraries:
            kernels = ArtifactPaths(root, library_name(sub.name, "float16")).subgroup_matrix_kernels
            listed = json.loads(kernels.read_text())["kernels"] if kernels.exists() else {}
            if listed:
                # tensor-core kernels that replace some of the float16 library's where the device has `features`
                libraries["float16"]["subgroup_matrix"] = {**file_record(root, kernels, make), "kernels": len(listed),
                                                           "features": list(subgroup_matrix.FEATURES)}
        record = {"libraries": libraries}
        if sub.folder:
            cache = ArtifactPaths(root, sub.name).params_dir / "tensor-cache.json"
            record["params"] = file_record(root, cache, make)
            record["params"]["total_bytes"] = json.loads(cache.read_text())["metadata"]["total_bytes"]
        submodules[sub.name] = record

    def function(sub, name=None):
        return submodules[sub.name]["libraries"]["float32"]["functions"][name or sub.name]

    unet = function(fam.unet, "unet")
    (vae,) = [s for s in fam.submodules if s.kind == "vae"]
    image = function(vae)["outputs"][0]["shape"]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "family": fam.name,
        "variant": paths.variant,
        "wasm": file_record(root, root / fam.wasm_name, make),
        "latent_shape": unet["inputs"][0]["shape"],
        "image": {"height": image[0], "width": image[1]},
        # In the order the UNet takes their embeddings; `pooled`: it also returns the pooled embedding.
        "text_encoders": [{"submodule": t.name, "tokenizer": t.tokenizer, "pooled": t.pooled,
                           "max_length": function(t)["inputs"][0]["shape"][1]} for t in fam.text_encoders],
        # An empty negative prompt is zero embeddings (keep = 0), not the encoding of "".
        "zero_empty_negative": fam.zero_empty_negative,
        "submodules": submodules,
        "schedulers": {name: file_record(root, paths.scheduler_dir / FILES[name], make) for name in fam.schedulers},
        "default_scheduler": fam.schedulers[0],
        "tokenizers": {folder: {name: file_record(root, paths.tokenizer_dir / folder / name, make)
                                for name in ("tokenizer.json", "tokenizer_config.json")}
                       for folder in fam.tokenizer_folders},
        "required_features": [],
    }
    manifest["download_bytes"] = (manifest["wasm"]["bytes"] + sum(
        s["params"]["total_bytes"] for s in submodules.values() if "params" in s))
    out = root / "model.json"
    wrote = write_json_if_changed(out, manifest)
    log_stage(paths, "manifest")
    print(f"manifest {paths.variant}: {manifest['download_bytes'] / 2**20:.1f} MiB to download -> {out}"
          f"{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("manifest", main, uses_torch=False)

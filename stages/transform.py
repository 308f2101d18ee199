"""transform: traced Relax module -> lowered module (legalized, fused) + its parameter transform.

    python stages/transform.py --variant-dir artifacts/sd15-tiny --submodule unet [--dump-ir DIR]

Runs the target-independent phases of stages/lib/pipeline.py. The parameter transform that phase "lift"
splits off (`<function>_transform_params`) is written on its own, for dump-params to apply to the weights.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import log_stage, paths_from, run_stage, stage_parser, write_provenance  # noqa: E402
from lib.relax_io import load_module, save_module  # noqa: E402

TRANSFORM_SUFFIX = "_transform_params"


def struct_of(var) -> dict:
    ty = var.ty
    return {"name": var.name, "shape": [int(d) for d in ty.shape], "dtype": str(ty.dtype)}


def main():
    parser = stage_parser(__doc__)
    parser.add_argument("--dump-ir", type=Path, help="write the module after each phase into this folder")
    args = parser.parse_args()
    paths = paths_from(args)
    start = time.time()

    import tvm

    from lib import pipeline

    traced, meta = load_module(paths.traced, f"make {paths.traced}")
    phases = dict(pipeline.TRANSFORM_PHASES)
    mod = pipeline.run_phases(traced, [("canonicalize", phases["canonicalize"]), ("lift", phases["lift"])],
                              dump_dir=args.dump_ir)

    model_funcs, transform_funcs = {}, {}
    for gvar, func in mod.functions_items():
        name = gvar.name_hint
        (transform_funcs if name.endswith(TRANSFORM_SUFFIX) else model_funcs)[name] = func
    lowered = pipeline.run_phases(tvm.IRModule(model_funcs), [("legalize-fuse", phases["legalize-fuse"])],
                                  dump_dir=args.dump_ir)

    lowered_meta = {"family": meta["family"], "submodule": meta["submodule"], "functions": {}}
    for name, fmeta in meta["functions"].items():
        func = model_funcs[name]
        num_inputs = len(fmeta["inputs"])
        weights = [struct_of(v) for v in list(func.params)[num_inputs:]]
        has_transform = f"{name}{TRANSFORM_SUFFIX}" in transform_funcs
        assert has_transform or not weights, name
        lowered_meta["functions"][name] = {
            "inputs": fmeta["inputs"],
            "source_params": fmeta["params"],  # what <name>_transform_params takes, in order
            "params": weights,  # what the compiled function takes after its inputs, in order
            "transform": f"{name}{TRANSFORM_SUFFIX}" if has_transform else None,
        }
    wrote = save_module(paths.lowered, lowered, lowered_meta)
    save_module(paths.transform_params, tvm.IRModule(transform_funcs), lowered_meta)
    write_provenance(paths.lowered, "transform", [paths.traced])
    log_stage(paths, "transform")
    n_kernels = sum(1 for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    print(f"transform {paths.variant}/{paths.submodule}: {n_kernels} kernels, {time.time() - start:.1f}s "
          f"-> {paths.lowered}{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("transform", main)

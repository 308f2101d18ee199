"""transform: traced Relax module -> lowered module (legalized, fused) + its parameter transform.

    python stages/transform.py --variant-dir artifacts/sd15-tiny --submodule unet|unet-f16 [--dump-ir DIR]

Runs the target-independent phases of stages/lib/pipeline.py. The parameter transform that phase "lift"
splits off (`<function>_transform_params`) is written on its own, for dump-params to apply to the weights;
a float16 library (unet-f16) runs the same lift and uses the float32 library's transform and weights, so
it writes only its lowered module.
The one that phase "load-time" splits off stays in the library as `<function>_prepare`: the runtime runs it
once after loading the weights, and the function then takes what it returns.

The build-time transform goes into the library too, as `<function>_transform_params` (in a float16 library,
casting its results to the float16 weights the library takes): it turns checkpoint tensors into the stored
weights on the GPU. The benchmark uses it to run full-size models on weights seeded in diffusers' own layout,
which PyTorch can load as they are (bench/seeded_weights.py); it is a handful of copy kernels.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import log_stage, paths_from, run_stage, stage_parser, write_provenance  # noqa: E402
from lib.pipeline import PREPARE_SUFFIX  # noqa: E402
from lib.relax_io import load_module, save_module  # noqa: E402

TRANSFORM_SUFFIX = "_transform_params"


def struct_of(var) -> dict:
    ty = var.ty
    return {"name": var.name, "shape": [int(d) for d in ty.shape], "dtype": str(ty.dtype)}


def largest_tensor_bytes(mod) -> int:
    """The largest tensor any Relax function of `mod` takes, makes or returns, in bytes: the GPU buffer size the
    library needs (memory planning shares buffers between tensors but never makes one larger than its largest).
    The attention scores, not any weight, are the largest at full size (16 x 4096 x 4096 float32 = 1 GiB)."""
    import numpy as np
    from tvm import relax

    largest = 0

    def visit(expr):
        nonlocal largest
        ty = getattr(expr, "ty", None)
        if not isinstance(ty, relax.TensorType) or ty.shape is None or str(ty.dtype) == "void":
            return
        try:
            count = int(np.prod([int(d) for d in ty.shape]))
        except TypeError:  # a symbolic dimension: not in these models
            return
        largest = max(largest, count * np.dtype(str(ty.dtype)).itemsize)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            for param in func.params:
                visit(param)
            relax.analysis.post_order_visit(func.body, visit)
    return largest


def _computes(func) -> bool:
    """Whether a Relax function calls anything (a lifted transform that only regroups its input does not)."""
    from tvm import relax

    calls = []
    relax.analysis.post_order_visit(func.body, lambda e: calls.append(e) if isinstance(e, relax.Call) else None)
    return bool(calls)


def split_prepare(mod):
    """-> the second lift's output as an IRModule with `<name>_transform_params` renamed `<name>_prepare`, and
    the names of those. The lift gives every function with weights a transform; one that only passes the
    weights through is dropped (its function then takes the stored weights as they are)."""
    import tvm

    kept, prepare_names = {}, []
    for gvar, func in mod.functions_items():
        name = gvar.name_hint
        if not name.endswith(TRANSFORM_SUFFIX):
            kept[gvar] = func  # the same GlobalVar objects: calls refer to them
            continue
        if not _computes(func):
            continue
        prepare = name[: -len(TRANSFORM_SUFFIX)] + PREPARE_SUFFIX
        kept[tvm.ir.GlobalVar(prepare)] = func.with_attr("global_symbol", prepare)
        prepare_names.append(prepare)
    return tvm.IRModule(kept), prepare_names


def with_weight_transform(lifted, transform_mod, name: str, weight_types):
    """`lifted` plus `<name>_transform_params` (checkpoint tensors -> the weights `name` takes, whose types are
    `weight_types`). Where the library takes some weights in another dtype than the transform makes (float16),
    the library's transform calls the build's one, renamed `..._float32` and private, and casts its results."""
    from tvm import relax

    tname = f"{name}{TRANSFORM_SUFFIX}"
    func = transform_mod[tname]
    made = list(func.ret_ty.fields)
    dtypes = [str(t.dtype) for t in weight_types]
    assert len(made) == len(dtypes), (tname, len(made), len(dtypes))
    if all(str(m.dtype) == d for m, d in zip(made, dtypes)):
        lifted[tname] = func
        return lifted
    bb = relax.BlockBuilder(lifted)
    inner = bb.add_func(func.without_attr("global_symbol"), f"{tname}_float32")
    sources = relax.Var("sources", func.params[0].ty)
    with bb.function(tname, [sources], attrs={"global_symbol": tname}):
        with bb.dataflow():
            out = bb.emit(relax.Call(inner, [sources]))
            cast = [relax.TupleGetItem(out, i) for i in range(len(made))]
            cast = [bb.emit(relax.op.astype(c, d) if str(m.dtype) != d else c) for c, m, d in zip(cast, made, dtypes)]
            result = bb.emit_output(relax.Tuple(cast))
        bb.emit_func_output(result)
    return bb.get()


def main():
    parser = stage_parser(__doc__)
    parser.add_argument("--dump-ir", type=Path, help="write the module after each phase into this folder")
    parser.add_argument("--winograd", type=int, choices=[0, 1], default=1,
                        help="3x3 convolutions as Winograd GEMMs (1) or direct (0: less GPU memory)")
    args = parser.parse_args()
    paths = paths_from(args)
    start = time.time()

    import tvm

    from lib import pipeline

    traced, meta = load_module(paths.traced, f"make {paths.traced}")
    phases = dict(pipeline.TRANSFORM_PHASES)
    mod = pipeline.run_phases(traced, [("canonicalize", phases["canonicalize"]), ("lift", phases["lift"])],
                              dump_dir=args.dump_ir)

    # Split by GlobalVar, not name: calls refer to the GlobalVar objects. Kernels go to both halves; each
    # keeps those it calls.
    model_funcs, transform_funcs = {}, {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            model_funcs[gvar] = transform_funcs[gvar] = func
        else:
            (transform_funcs if gvar.name_hint.endswith(TRANSFORM_SUFFIX) else model_funcs)[gvar] = func
    transform_names = [gv.name_hint for gv, f in transform_funcs.items() if not isinstance(f, tvm.tirx.PrimFunc)]
    transform_mod = tvm.relax.transform.DeadCodeElimination(transform_names)(tvm.IRModule(transform_funcs))
    precision = functools.partial(phases["precision"], paths.compute)
    model = pipeline.run_phases(tvm.IRModule(model_funcs), [("precision", precision)], dump_dir=args.dump_ir)
    stored_params = {gv.name_hint: list(func.params) for gv, func in model.functions_items()
                     if not isinstance(func, tvm.tirx.PrimFunc)}
    load_time = functools.partial(phases["load-time"], winograd=bool(args.winograd))
    lifted = pipeline.run_phases(model, [("load-time", load_time)], dump_dir=args.dump_ir)
    lifted, prepare_names = split_prepare(lifted)
    for name, weights in stored_params.items():
        if f"{name}{TRANSFORM_SUFFIX}" in transform_names:
            lifted = with_weight_transform(lifted, transform_mod, name, [w.ty for w in weights[len(meta["functions"][name]["inputs"]):]])
    lowered = pipeline.run_phases(lifted, [("legalize-fuse", phases["legalize-fuse"])], dump_dir=args.dump_ir)

    lowered_meta = {"family": meta["family"], "submodule": meta["submodule"], "compute": paths.compute,
                    "functions": {}, "largest_tensor_bytes": largest_tensor_bytes(lowered)}
    for name, fmeta in meta["functions"].items():
        num_inputs = len(fmeta["inputs"])
        weights = [struct_of(v) for v in stored_params[name][num_inputs:]]
        has_transform = f"{name}{TRANSFORM_SUFFIX}" in transform_names
        assert has_transform or not weights, name
        prepare = f"{name}{PREPARE_SUFFIX}" if f"{name}{PREPARE_SUFFIX}" in prepare_names else None
        lowered_meta["functions"][name] = {
            "inputs": fmeta["inputs"],
            "outputs": fmeta["outputs"],
            "source_params": fmeta["params"],  # what <name>_transform_params takes, in order
            "unused_sources": fmeta["unused_sources"],  # checkpoint tensors the function never reads
            # the weights the library takes first (in <name>_prepare, or else <name>), in the order they are
            # stored; each dtype is the library's (float16 in a float16 library), whatever the shards store
            "params": weights,
            "transform": f"{name}{TRANSFORM_SUFFIX}" if has_transform else None,
            "prepare": prepare,
            # what the compiled function takes after its inputs: <name>_prepare's results, or the weights
            "prepared_params": ([struct_of(v) for v in list(lifted[name].params)[num_inputs:]]
                                if prepare else weights),
        }
    wrote = save_module(paths.lowered, lowered, lowered_meta)
    if paths.compute == "float32":
        save_module(paths.transform_params, transform_mod, lowered_meta)
    write_provenance(paths.lowered, "transform", [paths.traced], {"winograd": args.winograd})
    log_stage(paths, "transform")
    n_kernels = sum(1 for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    print(f"transform {paths.variant}/{paths.submodule}: {n_kernels} kernels, {time.time() - start:.1f}s "
          f"-> {paths.lowered}{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("transform", main, uses_torch=False)

"""trace: one diffusers submodule -> a Relax IRModule, its weights kept as parameters.

    python stages/trace.py --variant-dir artifacts/sd15-tiny --submodule unet --weights artifacts/sd15-tiny/weights

Exports each of the submodule's wrapper functions (stages/lib/submodules/) with torch.export and imports it
with TVM's ExportedProgram frontend. Only the configuration is read here: the module is built with its weights
on the meta device (shapes only, no memory), so new weights with the same architecture do not re-trace and a
full-size SDXL UNet traces in a few GB. The parameter list of each
function (Relax name -> checkpoint tensor name, shape, dtype) goes into the file's metadata for dump-params.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import StageError, log_stage, paths_from, run_stage, stage_parser, write_provenance  # noqa: E402
from lib.models import check_weights_folder, family, safetensors_files  # noqa: E402
from lib.relax_io import save_module  # noqa: E402


def trace_entry(entry):
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    from lib.submodules import plain_attention

    # Deprecation notices of torch's pytree internals, raised inside torch.export and TVM's importer: not the
    # user's to act on, and noise beside a real error of a parallel build.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # All on the meta device for the export (meta weights cannot meet real inputs); the buffers' values (CLIP's
        # position ids) become constants of the module, so they go back into the program before it is imported.
        buffers = dict(entry.module.named_buffers())
        module = entry.module.to("meta")
        with torch.no_grad(), plain_attention():
            program = torch.export.export(module, tuple(x.to("meta") for x in entry.example_inputs))
            # (what the importer would run first, but with the real buffers back it would meet meta weights)
            program = program.run_decompositions()
        for spec in program.graph_signature.input_specs:
            if spec.kind.name == "BUFFER":
                store = program.state_dict if spec.target in program.state_dict else program.constants
                store[spec.target] = buffers[spec.target]
        with importable_meta_weights():
            mod = from_exported_program(program, keep_params_as_input=True, unwrap_unit_return_tuple=True,
                                        run_ep_decomposition=False)
    # Non-persistent buffers (CLIP's position_ids) are in no checkpoint; the frontend makes them constants.
    state = program.state_dict
    constants = {spec.arg.name for spec in program.graph_signature.input_specs
                 if spec.kind.name == "BUFFER" and spec.target not in state}
    func = drop_unused_weights(mod, len(entry.input_names))
    # The frontend copies every weight into the function's attributes; weights travel through dump-params
    # instead, so drop them and keep the module small and independent of the weight values.
    func = func.without_attr("params").with_attr("global_symbol", entry.function)
    kept = {p.name for p in func.params}
    params, unused = [], []
    for spec in program.graph_signature.input_specs:
        if spec.kind.name not in ("PARAMETER", "BUFFER") or spec.arg.name in constants:
            continue
        source = spec.target
        assert source.startswith(entry.weights_prefix), (source, entry.weights_prefix)
        if spec.arg.name not in kept:
            unused.append(source[len(entry.weights_prefix):])
            continue
        tensor = state[source]
        params.append({
            "name": spec.arg.name,
            "source": source[len(entry.weights_prefix):],
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).replace("torch.", ""),
        })
    relax_names = [p.name for p in func.params]
    num_inputs = len(entry.input_names)
    assert relax_names[num_inputs:] == [p["name"] for p in params], "parameter order differs from the export"
    inputs = [{"name": name, "shape": [int(d) for d in t.shape], "dtype": str(t.dtype).replace("torch.", "")}
              for name, t in zip(entry.input_names, entry.example_inputs)]
    results = program.graph.output_node().args[0]
    outputs = [{"shape": [int(d) for d in node.meta["val"].shape], "dtype": str(node.meta["val"].dtype).replace("torch.", "")}
               for node in results]
    return func, {"inputs": inputs, "outputs": outputs, "params": params, "unused_sources": unused}


@contextlib.contextmanager
def importable_meta_weights():
    """The weights are built on the meta device (shapes, no values: accelerate's init_empty_weights in main), so
    full-size models trace in little memory. TVM's importer copies every weight into an attribute of the function,
    which this stage drops anyway (weights travel through dump-params); for a meta tensor it gets an empty
    placeholder instead of failing on "no data". (Buffers are real: init_empty_weights leaves them alone, and
    they become constants.)"""
    import numpy as np
    import tvm
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter as Importer

    original = Importer.__dict__["_convert_pytorch_tensor_to_tvm"]

    def convert(tensor):
        if tensor.is_meta:
            return tvm.runtime.tensor(np.zeros(0, dtype=np.float32))
        return original.__func__(tensor)

    Importer._convert_pytorch_tensor_to_tvm = staticmethod(convert)
    try:
        yield
    finally:
        Importer._convert_pytorch_tensor_to_tvm = original


def drop_unused_weights(mod, num_inputs: int):
    """The module's function without the weights its result does not depend on (SDXL's first text encoder stops
    at its penultimate layer: the last layer and the final norm are never computed). Those checkpoint tensors
    are listed in the metadata as unused, so dump-params skips exactly them; the compiled function takes the rest."""
    from tvm import relax

    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    func = mod["main"]
    used = {v.name for v in relax.analysis.free_vars(func.body)}
    params = list(func.params[:num_inputs]) + [p for p in func.params[num_inputs:] if p.name in used]
    if len(params) == len(func.params):
        return func
    return relax.Function(params, func.body, func.ret_ty, func.is_pure, func.attrs)


def check_shapes(entry, sub, folder: Path) -> None:
    """Every tensor of the model built from config.json must have that shape in the weights files too. Reads
    the files' headers only: seconds here, where dump-params would find it after minutes of compiling."""
    from safetensors import SafetensorError, safe_open

    stored = {}
    for path in safetensors_files(folder):
        try:
            with safe_open(str(path), framework="numpy") as f:
                stored.update((sub.parameter_name(key), (path, list(f.get_slice(key).get_shape()))) for key in f.keys())
        except (OSError, SafetensorError) as err:
            raise StageError(f"{path} is not a readable safetensors file ({err}); re-save or re-download it") from None
    prefix = entry.weights_prefix
    for name, tensor in entry.module.state_dict().items():
        if not name.startswith(prefix):
            continue
        source = name[len(prefix):]
        path, shape = stored.get(source, (None, None))
        if path is not None and shape != list(tensor.shape):
            raise StageError(f"{folder / 'config.json'} does not match the weights: {source} is {shape} in "
                             f"{path.name}, the config makes it {list(tensor.shape)}; use the config.json that "
                             f"came with these weights")


def main():
    parser = stage_parser(__doc__, weights=True)
    args = parser.parse_args()
    paths = paths_from(args)
    fam = family(paths.family)
    sub = fam.submodule(args.submodule)
    check_weights_folder(args.weights, fam)

    import tvm

    from lib.submodules import load_entries

    start = time.time()
    functions, meta = {}, {"family": fam.name, "submodule": sub.name, "functions": {}}
    config = args.weights / sub.config_folder / "config.json"
    from accelerate import init_empty_weights

    try:
        with init_empty_weights():
            entries = load_entries(fam, sub, args.weights)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        # read_config has checked the JSON; this is a setting the model classes refuse or miss.
        raise StageError(f"{config} does not describe a {sub.name} diffusers can build ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no detail'}); restore it from the model's "
                         f"release") from None
    for entry in entries:
        if sub.folder:
            check_shapes(entry, sub, args.weights / sub.folder)
        func, func_meta = trace_entry(entry)
        functions[entry.function] = func
        meta["functions"][entry.function] = func_meta
    mod = tvm.IRModule(functions)
    configs = [args.weights / sub.config_folder / "config.json"]
    wrote = save_module(paths.traced, mod, meta)
    write_provenance(paths.traced, "trace", configs, {"weights": str(args.weights)})
    log_stage(paths, "trace")
    n_params = sum(len(f["params"]) for f in meta["functions"].values())
    print(f"trace {paths.variant}/{sub.name}: {len(functions)} function(s), {n_params} parameters, "
          f"{time.time() - start:.1f}s -> {paths.traced}{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("trace", main)

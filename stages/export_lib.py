"""export-lib: compile one submodule for a target.

    python stages/export_lib.py --variant-dir artifacts/sd15-tiny --submodule unet --target webgpu|cpu

    python stages/export_lib.py --variant-dir artifacts/sd15-tiny --link --runtime-dir artifacts/tvm-runtime/<ver>

webgpu: the scheduled module, compiled with a wasm32 host into object files (a tar), as a TVM system
library with its own prefix (sd15_unet_..., sd15_unet_f16_... for the float16 library), so every library is
compiled on its own and the link step only combines objects. cpu: the lowered module compiled to a shared library, for tests and the reference.
--link: every library's WebGPU objects + the TVM web runtime -> the family's .wasm (e.g.
stable_diffusion_webgpu.wasm), the one library the page loads.
"""

from __future__ import annotations

import io
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import (file_if_changed, log_stage, paths_from, run_stage, stage_parser,  # noqa: E402
                     write_bytes_if_changed, write_provenance)
from lib.models import family  # noqa: E402
from lib.relax_io import load_module  # noqa: E402


def deterministic_tar(src: Path) -> bytes:
    """The same objects packed with fixed order, times and owners, so an unchanged build is byte-equal."""
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tout:
        for member in sorted(tin.getmembers(), key=lambda m: m.name):
            data = tin.extractfile(member).read()
            info = tarfile.TarInfo(member.name)
            info.size, info.mode = len(data), 0o644
            tout.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_subgroup_matrix_kernels(paths, scheduled, executable, fam) -> int:
    """The float16 library's tensor-core replacements of its eligible kernels (stages/lib/subgroup_matrix.py),
    from the lowered module (the kernels' form), the scheduled one (their grid) and TVM's WGSL (their bindings)."""
    from lib import subgroup_matrix

    (webgpu,) = [m for llvm in executable.mod.imports for m in llvm.imports if m.kind == "webgpu"]
    lowered, _ = load_module(paths.lowered, f"make {paths.lowered}")
    kernels = subgroup_matrix.library_kernels(lowered, scheduled, subgroup_matrix.split_wgsl(webgpu.inspect_source()),
                                              fam.system_lib_prefix(paths.base_submodule, paths.compute))
    write_bytes_if_changed(paths.subgroup_matrix_kernels, subgroup_matrix.kernels_file(kernels))
    return len(kernels)


def link(paths, fam, runtime_dir: Path) -> None:
    from lib.cli import ArtifactPaths, library_name
    from lib.wasm_link import link_wasm

    start = time.time()
    tars = [ArtifactPaths(paths.variant_dir, library_name(sub.name, compute)).lib("webgpu")
            for sub, compute in fam.libraries()]
    out = paths.variant_dir / fam.wasm_name
    wrote = link_wasm(tars, runtime_dir, out)
    write_provenance(out, "link", tars + sorted(runtime_dir.glob("*.o")))
    log_stage(paths, "link")
    print(f"link {paths.variant}: {len(tars)} libraries + runtime, {out.stat().st_size / 2**20:.1f} MiB, "
          f"{time.time() - start:.1f}s -> {out}{'' if wrote else ' (unchanged)'}")


def main():
    parser = stage_parser(__doc__, submodule=False)
    parser.add_argument("--submodule", help="clip, unet, vae or sched, or a float16 library: unet-f16 (not with --link)")
    parser.add_argument("--target", choices=["webgpu", "cpu"])
    parser.add_argument("--link", action="store_true", help="combine every submodule into the family's .wasm")
    parser.add_argument("--runtime-dir", type=Path, help="TVM web runtime objects (with --link)")
    args = parser.parse_args()
    if args.link:
        if args.runtime_dir is None:
            parser.error("--link needs --runtime-dir")
        paths = paths_from(args)
        return link(paths, family(paths.family), args.runtime_dir)
    if not (args.submodule and args.target):
        parser.error("give --submodule and --target, or --link")
    paths = paths_from(args)
    fam = family(paths.family)
    start = time.time()

    from tvm import relax

    from lib.pipeline import export_pipeline, tir_pipeline
    from lib.targets import target as make_target

    if args.target == "webgpu":
        source = paths.scheduled("webgpu")
        mod, meta = load_module(source, f"make {source}")
        mod = mod.with_attr("system_lib_prefix", fam.system_lib_prefix(paths.base_submodule, paths.compute))
    else:
        source = paths.lowered
        mod, meta = load_module(source, f"make {source}")
    executable = relax.build(mod, make_target(args.target), relax_pipeline=export_pipeline(),
                             tir_pipeline=tir_pipeline())

    out = paths.lib(args.target)
    extra = ""
    if args.target == "webgpu":
        with file_if_changed(out.with_suffix(".raw.tar")) as raw:
            executable.export_library(str(raw))
            wrote = write_bytes_if_changed(out, deterministic_tar(raw))
        out.with_suffix(".raw.tar").unlink(missing_ok=True)
        if paths.compute == "float16":
            extra = f", {write_subgroup_matrix_kernels(paths, mod, executable, fam)} subgroup-matrix kernel(s)"
    else:
        with file_if_changed(out) as tmp:
            executable.export_library(str(tmp))
        wrote = True
    write_provenance(out, "export-lib", [source], {"target": args.target, "tvm_target": str(make_target(args.target))})
    log_stage(paths, "export-lib")
    print(f"export-lib {paths.variant}/{paths.submodule} [{args.target}]: {out.stat().st_size / 2**10:.0f} KiB{extra}, "
          f"{time.time() - start:.1f}s -> {out}{'' if wrote else ' (unchanged)'}")


if __name__ == "__main__":
    run_stage("export-lib", main, uses_torch=False)

"""The one Relax compilation pipeline, phase by phase (after mlc-llm's compiler_pass/pipeline.py).

    transform stage (target-independent):  1 canonicalize (one product per group of products of one input)
                                           -> 2 lift parameter transforms (build time)
                                           -> 3 compute precision (float16 libraries only)
                                           -> 4 rewrites with load-time weight work
                                           -> 5 fuse attention, legalize and fuse
                                              (one PrimFunc per distinct kernel)
    tune stage (per target):                6 schedule (MetaSchedule database, then dlight for the rest)
    export-lib stage (per target):          7 lower dataflow -> 8 finalize (memory planning, VM lowering)
                                           -> TIR: TVM's default pipeline, plus eager conditions in GPU kernels

Each phase is a named list of TVM passes; `run_phases` applies a slice of them and can dump the module
after each phase (`--dump-ir DIR`), so a reader sees what every phase did. Custom passes would live one per
file under stages/lib/passes/ and be listed here.
"""

from __future__ import annotations

from pathlib import Path


def _transform():
    from tvm.relax import transform as T

    return T


def canonicalize():
    from .passes.combine_parallel_matmuls import CombineParallelMatmuls
    from .passes.narrow_take_indices import NarrowTakeIndices
    from .passes.split_group_norm import SplitGroupNorm

    T = _transform()
    return [T.DecomposeOpsForInference(), T.CanonicalizeBindings(), NarrowTakeIndices, SplitGroupNorm,
            T.CanonicalizeBindings(), CombineParallelMatmuls, T.CanonicalizeBindings()]


def lift_parameter_transforms():
    # Work that depends only on weights (transposes, constant folding of weight expressions) moves into
    # `<function>_transform_params`, which dump-params runs once on the CPU at build time.
    T = _transform()
    return [T.LiftTransformParams(), T.FoldConstant()]


def compute_precision(compute: str = "float32"):
    # A float16 library: float16 weights and activations, float32 accumulation and reductions.
    if compute == "float32":
        return []
    assert compute == "float16", compute
    from .passes.float16_weights import Float16Weights
    from .passes.fold_casts import FoldCasts

    return [Float16Weights, FoldCasts, _transform().DeadCodeElimination()]


def load_time_weight_transforms(winograd: bool = True):
    # Rewrites that add weight-only work which must not be stored: Winograd's transformed weights are 4x the
    # weights. A second lift moves that work into `<function>_transform_params` again; transform.py keeps it
    # in the library as `<function>_prepare`, which the runtime runs once on the GPU after loading weights.
    from .passes.winograd_conv2d import WinogradConv2d

    T = _transform()
    return ([WinogradConv2d] if winograd else []) + [T.LiftTransformParams()]


def legalize_and_fuse():
    from .passes.deduplicate_kernels import DeduplicateKernels
    from .passes.fuse_attention import FuseAttention

    T = _transform()
    return [
        FuseAttention,
        T.LegalizeOps(),
        T.AnnotateTIROpPattern(),
        T.FoldConstant(),
        T.FuseOps(),
        T.FuseTIR(),
        T.DeadCodeElimination(),
        DeduplicateKernels,
    ]


# The load-time weight transform of `<function>` is `<function>` + PREPARE_SUFFIX in the library.
PREPARE_SUFFIX = "_prepare"

# A tuning log (artifacts/tuning/<model>/<submodule>/) is this MetaSchedule JSON database, the pair of files.
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


def schedule(target, database_dir: Path | None):
    """MetaSchedule records first (tuned kernels), then TVM's default GPU schedules for the rest."""
    from tvm.s_tir import dlight as dl

    passes = []
    if database_dir is not None:
        from tvm.s_tir import meta_schedule as ms

        database = ms.database.JSONDatabase(*(str(database_dir / f) for f in DATABASE_FILES), allow_missing=False)
        passes.append(_apply_database(database))
    if "gpu" in target.keys:
        from .schedules import default_rules

        passes.append(dl.ApplyDefaultSchedule(*default_rules()))
    return passes


def _apply_database(database):
    import tvm
    from tvm.relax import transform as T

    @tvm.transform.module_pass(opt_level=0, name="ApplyTuningDatabase")
    def apply(mod, ctx):
        with database:
            return T.MetaScheduleApplyDatabase(enable_warning=False)(mod)

    return apply


def lower_dataflow():
    T = _transform()
    return [T.RewriteDataflowReshape(), T.ToNonDataflow(), T.RemovePurityChecking(), T.CallTIRRewrite()]


def finalize():
    T = _transform()
    return [
        T.StaticPlanBlockMemory(),
        T.LowerAllocTensor(),
        T.KillAfterLastUse(),
        T.LowerRuntimeBuiltin(),
        T.ComputePrimValue(),
        T.VMShapeLower(),
        T.AttachGlobalSymbol(),
    ]


TRANSFORM_PHASES = [("canonicalize", canonicalize), ("lift", lift_parameter_transforms),
                    ("precision", compute_precision), ("load-time", load_time_weight_transforms),
                    ("legalize-fuse", legalize_and_fuse)]
EXPORT_PHASES = [("lower-dataflow", lower_dataflow), ("finalize", finalize)]


def run_phases(mod, phases, *, target=None, dump_dir: Path | None = None):
    import tvm

    for name, make_passes in phases:
        with tvm.transform.PassContext(opt_level=3):
            if target is not None:
                with target:
                    mod = tvm.transform.Sequential(make_passes())(mod)
            else:
                mod = tvm.transform.Sequential(make_passes())(mod)
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)
            (dump_dir / f"{name}.py").write_text(mod.script(show_meta=False))
    return mod


TIR_PIPELINE = "websd"


def tir_pipeline() -> str:
    """The name of the TIR pipeline for relax.build / tirx.build (registered on first use): TVM's default, with
    the GPU kernels' conditions made eager (passes/eager_conditions.py) after its own device passes."""
    import tvm
    from tvm import tirx

    from .passes.eager_conditions import EagerConditions

    def factory(**kwargs):
        lower, finalize_host, finalize_device = tirx.get_tir_pipeline("default", **kwargs)
        return lower, finalize_host, lambda: tvm.transform.Sequential([finalize_device(), EagerConditions])

    tirx.register_tir_pipeline(TIR_PIPELINE, factory)
    return TIR_PIPELINE


def export_pipeline():
    """The Relax pipeline that relax.build runs on an already scheduled module."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="WebSDExport")
    def _pipeline(mod, ctx):
        return tvm.transform.Sequential(lower_dataflow() + finalize())(mod)

    return _pipeline

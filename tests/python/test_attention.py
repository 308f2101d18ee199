"""The fused attention: the FuseAttention pass on Relax, its plain definition on the CPU, and the hand-scheduled
WebGPU kernel (stages/lib/attention.py) on SwiftShader, each against float64 numpy.

    .venv/bin/python -m pytest tests/python/test_attention.py -q

The kernel cases cover what its index arithmetic special-cases: a partial last group of query rows, a partial
last block of keys (77 text tokens), a key block whose loads do not divide among the threads, two rows per
thread, the default configurations of full-size head widths (40, 80) on small token counts, and scores large
enough that exp() overflows without the running maximum. A float16-input kernel (what the float16 libraries
use) runs on lavapipe, the one adapter here with shader-f16. Outputs start as NaN, so an unwritten value fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from conftest import LAVAPIPE_ICD, SWIFTSHADER_ICD
from webgpu_kernels import assert_matches, build_wasm, numpy_attention, relative_error, run_kernels

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

from lib import attention  # noqa: E402
from lib.attention import Config  # noqa: E402

# float32 throughout, against float64: a few ulps of the output's scale (measured ~1e-7).
TOLERANCE = 1e-5
# float16 inputs (rounded here too, so only the kernel's arithmetic differs): float32 accumulation.
FLOAT16_TOLERANCE = 1e-5

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

# (name, bh, n_q, n_k, d, config or None for the default, scale of q)
CASES = [
    ("ragged-rows-and-keys", 2, 100, 77, 8, Config(64, 1, 16), 1.0),
    ("two-rows-per-thread", 3, 200, 64, 8, Config(32, 2, 16), 1.0),
    ("ragged-tile-loads", 2, 70, 50, 10, Config(64, 1, 16), 1.0),
    ("large-scores", 2, 64, 96, 8, Config(64, 1, 32), 40.0),
    ("head-width-40", 2, 160, 96, 40, Config(64, 2, 32), 0.16),
    ("head-width-80", 1, 100, 77, 80, Config(64, 1, 16), 0.11),
    ("default-small", 4, 64, 64, 8, None, 0.35),
    ("stream", 2, 100, 77, 8, Config(64, 1, 16, "stream"), 3.0),
    ("stream-two-rows", 2, 150, 64, 40, Config(32, 2, 16, "stream"), 0.5),
]


def inputs_for(bh, n_q, n_k, d, scale, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((bh, n_q, d)) * scale).astype(dtype)
    k_t = rng.standard_normal((bh, d, n_k)).astype(dtype)
    v = rng.standard_normal((bh, n_k, d)).astype(dtype)
    return q, k_t, v


FLOAT16_CASE = (2, 130, 77, 40, Config(64, 2, 32))


@pytest.fixture(scope="module")
def kernels_wasm(tiny_build, tmp_path_factory):
    """Every case's kernel and the float16-input one, in one library (one link: about a minute), linked with
    the TVM web runtime the session build made."""
    if shutil.which("node") is None:
        pytest.skip("needs node")
    runtime = tiny_build.artifacts / "tvm-runtime" / version("apache-tvm")
    kernels = {}
    for name, bh, n_q, n_k, d, config, _ in CASES:
        config = config or attention.default_config(bh, n_q, n_k, d)
        kernels[name.replace("-", "_")] = attention.kernel(bh, n_q, n_k, d, "float32", "float32", config)
    bh, n_q, n_k, d, config = FLOAT16_CASE
    kernels["float16_inputs"] = attention.kernel(bh, n_q, n_k, d, "float16", "float32", config)
    return build_wasm(tmp_path_factory.mktemp("attention-wasm"), kernels, runtime)


@pytest.fixture(scope="module")
def webgpu_outputs(kernels_wasm, tmp_path_factory):
    if not os.path.exists(SWIFTSHADER_ICD):
        pytest.skip("needs SwiftShader (make setup)")
    calls, expected = [], {}
    for i, (name, bh, n_q, n_k, d, _, scale) in enumerate(CASES):
        q, k_t, v = inputs_for(bh, n_q, n_k, d, scale, seed=i)
        calls.append((name.replace("-", "_"), (q, k_t, v), [bh, n_q, d], "float32"))
        expected[name] = numpy_attention(q, k_t, v)
    outputs = run_kernels(kernels_wasm, tmp_path_factory.mktemp("attention"), calls, SWIFTSHADER_ICD)
    return {name: (outputs[name.replace("-", "_")], expected[name]) for name in expected}


@pytest.mark.parametrize("name", [case[0] for case in CASES])
def test_kernel_matches_numpy(webgpu_outputs, name):
    assert_matches(*webgpu_outputs[name], TOLERANCE, name)


def test_float16_inputs_on_lavapipe(kernels_wasm, tmp_path):
    """The float16 libraries' form: float16 q, k, v, float32 arithmetic and output."""
    if not LAVAPIPE_ICD.exists():
        pytest.skip(f"needs {LAVAPIPE_ICD} (make setup fetches lavapipe)")
    bh, n_q, n_k, d, _ = FLOAT16_CASE
    q, k_t, v = inputs_for(bh, n_q, n_k, d, 0.16, seed=7, dtype=np.float16)
    out = run_kernels(kernels_wasm, tmp_path, [("float16_inputs", (q, k_t, v), [bh, n_q, d], "float32")],
                      str(LAVAPIPE_ICD), features=["shader-f16"])["float16_inputs"]
    assert_matches(out, numpy_attention(q, k_t, v), FLOAT16_TOLERANCE, "float16 inputs")


# ---- the pass and the plain definition ---------------------------------------------------------------------

def traced_attention(batch, heads, tokens, context, width, dtype="float32"):
    """A Relax function shaped as trace.py exports diffusers' attention (plain_attention): head split,
    scaled q, k transposed, softmax over the keys, heads merged."""
    from tvm import relax
    from tvm.relax import op

    builder = relax.BlockBuilder()
    channels = heads * width
    x = relax.Var("x", relax.TensorType((batch, tokens, channels), dtype))
    ctx = relax.Var("ctx", relax.TensorType((batch, context, channels), dtype))
    with builder.function("main", [x, ctx]):
        with builder.dataflow():
            def heads_first(t, n):
                t = builder.emit(op.reshape(t, (batch, n, heads, width)))
                return builder.emit(op.permute_dims(t, [0, 2, 1, 3]))

            q = builder.emit(op.multiply(heads_first(x, tokens), relax.const(width ** -0.5, dtype)))
            k = builder.emit(op.permute_dims(heads_first(ctx, context), [0, 1, 3, 2]))
            v = heads_first(ctx, context)
            q3 = builder.emit(op.reshape(q, (batch * heads, tokens, width)))
            k3 = builder.emit(op.reshape(k, (batch * heads, width, context)))
            v3 = builder.emit(op.reshape(v, (batch * heads, context, width)))
            scores = builder.emit(op.matmul(q3, k3, out_dtype="float32"))
            scores = builder.emit(op.reshape(scores, (batch, heads, tokens, context)))
            probs = builder.emit(op.nn.softmax(scores, axis=-1))
            if dtype != "float32":
                probs = builder.emit(op.astype(probs, dtype))
            probs = builder.emit(op.reshape(op.broadcast_to(probs, (batch, heads, tokens, context)),
                                            (batch * heads, tokens, context)))
            out = builder.emit(op.matmul(probs, v3, out_dtype="float32"))
            out = builder.emit(op.reshape(out, (batch, heads, tokens, width)))
            out = builder.emit(op.permute_dims(out, [0, 2, 1, 3]))
            out = builder.emit_output(op.reshape(out, (batch, tokens, channels)))
        builder.emit_func_output(out)
    return builder.get()


def kernels_of(mod):
    import tvm

    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def run_cpu(mod, *arrays):
    import tvm
    from tvm import relax

    from lib import pipeline

    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(pipeline.legalize_and_fuse())(mod)
        executable = relax.build(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def test_pass_fuses_attention_and_keeps_the_result():
    import tvm
    from tvm import relax

    from lib.passes.fuse_attention import FuseAttention

    batch, heads, tokens, context, width = 2, 3, 40, 77, 8
    mod = traced_attention(batch, heads, tokens, context, width)
    fused = FuseAttention(mod)
    fused = relax.transform.DeadCodeElimination()(fused)
    text = fused.script(show_meta=False)
    assert "R.nn.softmax" not in text and text.count("R.matmul") == 0, text
    marked = [f for f in kernels_of(fused).values() if attention.is_attention(f)]
    assert len(marked) == 1 and int(marked[0].attrs["op_pattern"]) == 8

    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, tokens, heads * width)).astype(np.float32)
    ctx = rng.standard_normal((batch, context, heads * width)).astype(np.float32)
    before, after = run_cpu(mod, x, ctx), run_cpu(tvm.IRModule(fused.functions), x, ctx)
    split = lambda t, n: t.reshape(batch, n, heads, width).transpose(0, 2, 1, 3).reshape(batch * heads, n, width)  # noqa: E731
    q = split(x, tokens) * width ** -0.5
    k = split(ctx, context)
    ref = numpy_attention(q, k.transpose(0, 2, 1), split(ctx, context))
    ref = ref.reshape(batch, heads, tokens, width).transpose(0, 2, 1, 3).reshape(batch, tokens, heads * width)
    assert relative_error(before, ref) < TOLERANCE
    assert relative_error(after, ref) < TOLERANCE


def test_pass_fuses_the_float16_form():
    from lib.passes.fuse_attention import FuseAttention

    fused = FuseAttention(traced_attention(1, 2, 16, 16, 8, dtype="float16"))
    marked = [f for f in kernels_of(fused).values() if attention.is_attention(f)]
    assert len(marked) == 1
    assert [dtype for _, dtype in attention.buffers(marked[0])] == ["float16", "float16", "float16", "float32"]


@pytest.mark.parametrize("tokens,context,width,fused", [
    (16, 16, attention.MAX_HEAD_DIM + 8, False),  # the VAE's 512-wide head: 2 x 512 floats per thread
    (1024, 1024, 80, False),  # measured slower than the three kernels (attention.worth_fusing)
    (64, 77, 80, True),  # the same width over the 77 text tokens: faster
    (1024, 1024, 64, False),  # SDXL's 32 x 32 level: slower
    (4096, 4096, 64, True),  # SDXL's 64 x 64 level: twice as fast
])
def test_pass_fuses_where_it_pays(tokens, context, width, fused):
    from lib.passes.fuse_attention import FuseAttention

    from tvm import relax

    rewritten = relax.transform.DeadCodeElimination()(FuseAttention(traced_attention(1, 1, tokens, context, width)))
    assert any(attention.is_attention(f) for f in kernels_of(rewritten).values()) == fused
    assert ("R.nn.softmax" in rewritten.script(show_meta=False)) != fused


def test_gpu_rule_replaces_the_definition():
    """The tune stage's default rules give the marked PrimFunc the hand-scheduled kernel, with its parameters."""
    import tvm

    from lib import pipeline
    from lib.passes.fuse_attention import FuseAttention
    from lib.targets import target

    mod = FuseAttention(traced_attention(2, 2, 64, 64, 8))
    mod = tvm.transform.Sequential(pipeline.legalize_and_fuse()[1:])(mod)
    (name,) = [n for n, f in kernels_of(mod).items() if attention.is_attention(f)]
    definition = attention.buffers(mod[name])
    gpu = target("webgpu")
    scheduled = pipeline.run_phases(mod, [("schedule", lambda: pipeline.schedule(gpu, None))], target=gpu)
    kernel = kernels_of(scheduled)[name]
    assert "shared" in kernel.script() and "threadIdx.x" in kernel.script()
    assert attention.buffers(kernel) == definition

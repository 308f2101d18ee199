"""How the weights are stored: float16 shards by default, widened exactly to the float32 the libraries take.

    .venv/bin/python -m pytest tests/python/test_params_storage.py -q

On the session's tiny build (conftest) and copies of it: `make sd15 PARAM_STORAGE=float32` reruns dump-params
alone and writes shards exactly twice the size of the default float16 ones, holding the values those round;
switching back restores the float16 build byte for byte. The Python loader (stages/lib/tensor_cache.py)
widens float16 and refuses other mismatches; web/runtime/params.js widens all 65536 halves to numpy's float32
bit patterns. tests/node/params.test.mjs tests the JavaScript loader itself; test_build_errors.py the error for
a weight beyond float16's range.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import MODEL, ROOT, WEIGHTED, Compiled, relative_error, stage_lines

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def read_cache(params_dir):
    """(metadata, {name: stored numpy array}) of a tensor cache, read as written (no widening)."""
    cache = json.loads((params_dir / "tensor-cache.json").read_text())
    arrays = {}
    for shard in cache["records"]:
        data = (params_dir / shard["dataPath"]).read_bytes()
        for rec in shard["records"]:
            arrays[rec["name"]] = np.frombuffer(data, dtype=np.dtype(rec["dtype"]).newbyteorder("<"),
                                                count=int(np.prod(rec["shape"])), offset=rec["byteOffset"])
    return cache["metadata"], arrays


def test_float16_shards_are_half_of_float32_and_hold_its_values_rounded(tiny_build, build_copy):
    from transformers import CLIPTextModel

    build = build_copy()
    variant = build.variant
    manifest16 = json.loads((variant / "model.json").read_text())

    result = build.make(MODEL, PARAM_STORAGE="float32")
    assert result.returncode == 0, result.stderr
    assert sorted(stage_lines(result.stdout)) == sorted(
        [f"DUMP-PARAMS {variant}/{sub}" for sub in WEIGHTED] + [f"MANIFEST {variant}/model.json"])

    weights16 = weights32 = 0
    for sub in WEIGHTED:
        meta16, stored16 = read_cache(tiny_build.variant / sub / "params.v1")
        meta32, stored32 = read_cache(variant / sub / "params.v1")
        assert (meta16["storage_dtype"], meta32["storage_dtype"]) == ("float16", "float32")
        assert meta16["param_dtypes"] == meta32["param_dtypes"] == ["float32"] * len(meta16["param_names"])
        assert {a.dtype.name for a in stored16.values()} == {"float16"}
        assert {a.dtype.name for a in stored32.values()} == {"float32"}
        # Every tensor is the float32 one rounded to nearest (ties to even), bit for bit.
        for name, values in stored32.items():
            np.testing.assert_array_equal(stored16[name].view(np.uint16), values.astype(np.float16).view(np.uint16),
                                          err_msg=name)
        assert meta32["total_bytes"] == 2 * meta16["total_bytes"]  # every parameter is float32
        weights16 += meta16["total_bytes"]
        weights32 += meta32["total_bytes"]
    manifest32 = json.loads((variant / "model.json").read_text())
    assert manifest32["download_bytes"] - manifest16["download_bytes"] == weights32 - weights16 == weights16
    print(f"weights to download: {weights32 / 2**20:.2f} MiB as float32, {weights16 / 2**20:.2f} MiB as float16")

    # The float32 shards still give the compiled code's parity with the unrounded model.
    compiled = Compiled(variant, "clip")
    model = CLIPTextModel.from_pretrained(build.weights / "text_encoder").eval()
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(2, 77), dtype=np.int32)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids).long()).last_hidden_state.numpy()
    assert relative_error(compiled("clip", ids, np.ones(2, np.float32)), ref) <= 1e-4

    # Back to the default: dump-params reruns and writes what the session build holds, byte for byte.
    back = build.make(MODEL)
    assert back.returncode == 0, back.stderr
    assert sorted(stage_lines(back.stdout)) == sorted(stage_lines(result.stdout))
    for sub in WEIGHTED:
        for f in (tiny_build.variant / sub / "params.v1").iterdir():
            assert (variant / sub / "params.v1" / f.name).read_bytes() == f.read_bytes(), f
    assert (variant / "model.json").read_bytes() == (tiny_build.variant / "model.json").read_bytes()
    assert stage_lines(build.make(MODEL).stdout) == []


def test_python_loader_widens_float16_and_refuses_other_mismatches(tiny_build, tmp_path):
    import tvm

    from lib.cli import StageError
    from lib.tensor_cache import load_params

    source = tiny_build.variant / "vae" / "params.v1"
    meta, stored = read_cache(source)
    tensors, _ = load_params(source, tvm.cpu())
    assert len(tensors) == len(meta["param_names"])
    for name, tensor in zip(meta["param_names"], tensors):
        assert tensor.dtype == "float32"
        np.testing.assert_array_equal(tensor.numpy().ravel(), stored[name].astype(np.float32), err_msg=name)

    def broken(change):
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(source, folder)
        cache = json.loads((folder / "tensor-cache.json").read_text())
        change(cache)
        (folder / "tensor-cache.json").write_text(json.dumps(cache))
        with pytest.raises(StageError) as err:
            load_params(folder, tvm.cpu())
        return folder, str(err.value)

    first = meta["param_names"][0]
    folder, message = broken(lambda c: c["metadata"]["param_dtypes"].__setitem__(0, "int32"))
    assert message == f"{folder}/tensor-cache.json: {first} is stored as float16, the library takes int32"
    folder, message = broken(lambda c: c["metadata"].pop("param_dtypes"))
    assert message.startswith(f"{folder}/tensor-cache.json: the tensor cache does not say which dtype")


def test_javascript_widening_matches_numpy_for_every_half(tmp_path):
    """web/runtime/params.js's table against numpy's float16 -> float32 conversion, all 65536 bit patterns,
    NaN payloads included."""
    if shutil.which("node") is None:
        pytest.skip("needs node")
    url = (ROOT / "web" / "runtime" / "params.js").as_uri()
    script = (f"import {{ widenFloat16 }} from {json.dumps(url)};\n"
              "const halves = Uint16Array.from({ length: 65536 }, (_, i) => i);\n"
              "process.stdout.write(Buffer.from(widenFloat16(halves).buffer));\n")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, check=True,
                         timeout=60).stdout
    ours = np.frombuffer(out, dtype="<u4")
    expected = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    assert ours.shape == (65536,)
    wrong = np.nonzero(ours != expected)[0]
    assert wrong.size == 0, [f"{h:#06x}: {ours[h]:#010x} != {expected[h]:#010x}" for h in wrong[:5]]


@pytest.mark.parametrize("fam", ["sd15", "sdxl"])
def test_checkpoint_names_of_transformers_4_are_read(tiny_build, tmp_path, fam):
    """Released text encoders (saved by transformers 4) name their tensors text_model.embeddings..., and carry
    the position ids; transformers 5, which made the tiny model, says embeddings.... Trace and dump-params read
    both: the cache written from the renamed checkpoint equals the session build's, byte for byte."""
    from safetensors.numpy import load_file, save_file

    from conftest import run_stage

    build = tiny_build.of(fam)
    weights = tmp_path / "weights"
    shutil.copytree(build.weights, weights)
    (checkpoint,) = (weights / "text_encoder").glob("*.safetensors")
    tensors = {f"text_model.{name}": value for name, value in load_file(checkpoint).items()}
    assert not any(name.startswith("text_model.text_model.") for name in tensors)
    tensors["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    save_file(tensors, checkpoint, metadata={"format": "pt"})

    variant = tmp_path / "artifacts" / build.variant.name
    shutil.copytree(build.variant / "clip", variant / "clip", symlinks=True)
    shutil.rmtree(variant / "clip" / "params.v1")
    traced = run_stage("trace", "--variant-dir", variant, "--submodule", "clip", "--weights", weights,
                       tree=build.tree)
    assert traced.returncode == 0, traced.stderr
    dumped = run_stage("dump_params", "--variant-dir", variant, "--submodule", "clip", "--weights", weights,
                       tree=build.tree)
    assert dumped.returncode == 0, dumped.stderr
    ours, original = variant / "clip" / "params.v1", build.variant / "clip" / "params.v1"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in original.iterdir())
    for shard in original.glob("*.bin"):
        assert (ours / shard.name).read_bytes() == shard.read_bytes(), shard.name

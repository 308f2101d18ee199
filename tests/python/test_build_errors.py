"""Bad input: each gives one clear error line and a non-zero exit, and writes nothing into the artifacts.

    .venv/bin/python -m pytest tests/python/test_build_errors.py -q

Through make where a user meets it (WEIGHTS unset, missing or incomplete; an unknown model; a corrupt
weights file), and through the stage scripts for what only they are given (a variant of an unknown model,
a wrong --submodule).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

import pytest
from conftest import MODEL, VARIANT, run_make, run_stage, snapshot, stage_lines

WRONG_SUBMODULE = "unett"


MAKE_BOOKKEEPING = "make: *** Waiting for unfinished jobs...."


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What the user is told: stderr, less make's own closing `make: *** [target] Error 1` line (it names
    the recipe that failed, after the stage has said why) and, in a parallel build, its note that it waits for
    the jobs already running, and the same line a second time (two stages of a parallel build that read the
    same broken file say the same thing)."""
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and line != MAKE_BOOKKEEPING
             and not (line.startswith("make: *** [") and "] Error " in line)]
    return list(dict.fromkeys(lines))


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = error_lines(result)
    assert len(lines) == 1, lines
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def assert_nothing_in(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), sorted(folder.rglob("*"))


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """An ARTIFACTS folder that must stay empty."""
    return tmp_path / "artifacts"


@pytest.fixture
def weights_copy(tiny_build, tmp_path):
    """A copy (cp -a, mtimes kept) of the tiny model's diffusers folder, which a test may break."""
    copy = tmp_path / "weights"
    subprocess.run(["cp", "-a", str(tiny_build.weights), str(copy)], check=True)
    return copy


# ---- make: WEIGHTS ----------------------------------------------------------------------------------------------


def test_weights_unset(tree, artifacts):
    result = run_make(MODEL, tree=tree, ARTIFACTS=artifacts)
    assert_one_line_error(result, "WEIGHTS is not set", "WEIGHTS=tiny")
    assert_nothing_in(artifacts)


def test_weights_folder_does_not_exist(tree, artifacts, tmp_path):
    missing = tmp_path / "nonexistent"
    result = run_make(MODEL, tree=tree, WEIGHTS=missing, ARTIFACTS=artifacts)
    assert_one_line_error(result, f"WEIGHTS={missing}", "no such folder")
    assert_nothing_in(artifacts)


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_single_file_checkpoint(tree, artifacts, tmp_path, model):
    """A single-file checkpoint (as many models are shared) is named as one, with how to convert it."""
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    result = run_make(model, tree=tree, WEIGHTS=checkpoint, ARTIFACTS=artifacts)
    pipeline = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[model]
    assert_one_line_error(result, f"WEIGHTS={checkpoint} is a single-file checkpoint",
                          f"{pipeline}.from_single_file(path).save_pretrained(folder)", "WEIGHTS=folder")
    assert_nothing_in(artifacts)


def test_weights_folder_without_vae(tree, artifacts, weights_copy):
    subprocess.run(["rm", "-r", str(weights_copy / "vae")], check=True)
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    line = assert_one_line_error(result, f"WEIGHTS={weights_copy}", "lacks the folder(s) vae;")
    assert "unet" not in line.split("lacks")[1].split(";")[0], "names a folder that is there"
    assert_nothing_in(artifacts)
    # A stage given the same folder says the same.
    stage = run_stage("trace", "--variant-dir", artifacts / MODEL, "--submodule", "vae", "--weights", weights_copy,
                      tree=tree)
    assert_one_line_error(stage, "error: trace:", "lacks the folder(s) vae;")
    assert_nothing_in(artifacts)


@pytest.mark.parametrize("missing", ["text_encoder_2", "tokenizer_2"])
def test_sdxl_folder_without_its_second_text_encoder(tiny_build, tree, artifacts, tmp_path, missing):
    weights = tmp_path / "sdxl"
    subprocess.run(["cp", "-a", str(tiny_build.of("sdxl").weights), str(weights)], check=True)
    subprocess.run(["rm", "-r", str(weights / missing)], check=True)
    result = run_make("sdxl", tree=tree, WEIGHTS=weights, ARTIFACTS=artifacts)
    assert_one_line_error(result, f"WEIGHTS={weights}", f"lacks the folder(s) {missing};")
    assert_nothing_in(artifacts)


def test_complete_weights_folder_is_accepted(tree, weights_copy, artifacts):
    """The checks above must not refuse a good folder (they once did, for every folder): make gets as
    far as planning the build."""
    result = run_make(MODEL, "-n", tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    assert result.returncode == 0, result.stderr
    trace = f"stages/trace.py --variant-dir {artifacts}/{MODEL} --submodule unet --weights {weights_copy}"
    assert trace in result.stdout
    assert_nothing_in(artifacts)


def test_weights_path_with_spaces(tree, artifacts, weights_copy, tmp_path):
    spaced = tmp_path / "my models" / "sd"
    spaced.parent.mkdir()
    weights_copy.rename(spaced)
    result = run_make(MODEL, tree=tree, WEIGHTS=spaced, ARTIFACTS=artifacts)
    assert_one_line_error(result, f'WEIGHTS="{spaced}" has spaces', "ln -s")
    assert_nothing_in(artifacts)


@pytest.mark.parametrize("given, target", [("sdxl", "sd15"), ("sd15", "sdxl")])
def test_folder_of_another_family(tiny_build, tree, artifacts, tmp_path, given, target):
    """An SDXL folder given to make sd15, or an SD 1.5 folder to make sdxl (model_index.json says which it
    holds): named with the target to use, before anything starts; a stage given it says the same."""
    weights = tmp_path / given
    subprocess.run(["cp", "-a", str(tiny_build.of(given).weights), str(weights)], check=True)
    result = run_make(target, tree=tree, WEIGHTS=weights, ARTIFACTS=artifacts)
    assert_one_line_error(result, f"WEIGHTS={weights} holds a {given} model", f"not {target}",
                          f"make {given} WEIGHTS={weights}")
    assert_nothing_in(artifacts)
    stage = run_stage("trace", "--variant-dir", artifacts / target, "--submodule", "unet", "--weights", weights,
                      tree=tree)
    assert_one_line_error(stage, "error: trace:", f"holds a {given} model", f"make {given}")


def test_folder_of_a_family_not_built_here(tree, artifacts, weights_copy):
    index = weights_copy / "model_index.json"
    index.write_text(index.read_text().replace('"StableDiffusionPipeline"', '"StableDiffusion3Pipeline"'))
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    assert_one_line_error(result, "holds a Stable Diffusion 3 model", "does not build", f"make {MODEL}")
    assert_nothing_in(artifacts)


def assert_only_the_scheduler_changed(before: dict, after: dict) -> None:
    """The UNet's config is the scheduler functions' input too: in a parallel build their trace runs beside the
    UNet's, and where it can read the config it finishes (its stamp, provenance and build.log line). Nothing
    else may change."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert {p for p in changed if not p.startswith(f"{MODEL}/sched/") and p != f"{MODEL}/build.log"} == set(), changed


def rebuild_with(build_copy, weights_copy, tree, **variables):
    """make sd15 on a copy of the session build named as a WEIGHTS=<folder> build is, with `weights_copy`."""
    build = build_copy(variant=MODEL)
    before = snapshot(build.artifacts)
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=build.artifacts, TUNING=build.tuning,
                      **variables)
    return build.artifacts / MODEL, before, result


def one_up_block_too_few(config: str) -> str:
    settings = json.loads(config)
    settings["up_block_types"] = settings["up_block_types"][:-1]
    return json.dumps(settings)


@pytest.mark.parametrize("damage, problem", [
    (lambda config: config[: len(config) // 2], "is not valid JSON"),
    (lambda config: "[1, 2]", "holds a JSON list, not an object"),
], ids=["truncated", "not-an-object"])
def test_unreadable_config_json(tree, artifacts, weights_copy, damage, problem):
    """The UNet's config.json unreadable two ways: make stops before any stage starts, with one line naming the
    file; a stage given the same folder says the same."""
    config = weights_copy / "unet" / "config.json"
    config.write_text(damage(config.read_text()))
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    assert_one_line_error(result, str(config), problem)
    assert stage_lines(result.stdout) == []
    assert_nothing_in(artifacts)
    stage = run_stage("trace", "--variant-dir", artifacts / MODEL, "--submodule", "sched", "--weights",
                      weights_copy, tree=tree)
    assert_one_line_error(stage, "error: trace:", str(config), problem)
    assert_nothing_in(artifacts)


def test_config_json_diffusers_refuses(tree, build_copy, weights_copy):
    """A config.json that reads as settings but describes no UNet diffusers can build: trace stops with one line
    naming the file and diffusers' reason (the scheduler functions read it too, and say the same); nothing
    built changes."""
    config = weights_copy / "unet" / "config.json"
    config.write_text(one_up_block_too_few(config.read_text()))
    variant, before, result = rebuild_with(build_copy, weights_copy, tree)
    assert_one_line_error(result, "error: trace:", str(config), "does not describe a unet diffusers can build (ValueError: ")
    assert_only_the_scheduler_changed(before, snapshot(variant.parent))


def test_config_that_disagrees_with_the_weights(tree, build_copy, weights_copy):
    """A wrong cross_attention_dim: trace finds it in the weights files' headers, before anything compiles."""
    config = weights_copy / "unet" / "config.json"
    settings = json.loads(config.read_text())
    settings["cross_attention_dim"] = 2 * settings["cross_attention_dim"]
    config.write_text(json.dumps(settings))
    variant, before, result = rebuild_with(build_copy, weights_copy, tree)
    assert_one_line_error(result, "error: trace:", f"{config} does not match the weights", "attn2.to_k.weight",
                          "use the config.json that came with these weights")
    assert set(stage_lines(result.stdout)) - {f"TRACE {variant}/sched"} == {f"TRACE {variant}/unet"}
    assert_only_the_scheduler_changed(before, snapshot(variant.parent))


def test_pickled_weights_are_refused_with_how_to_convert(tree, artifacts, weights_copy):
    """Weights only as pickled .bin: refused before any stage starts, with how to convert them."""
    (weights_file,) = (weights_copy / "unet").glob("*.safetensors")
    weights_file.rename(weights_copy / "unet" / "diffusion_pytorch_model.bin")
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    assert_one_line_error(result, f"{weights_copy / 'unet'} has no .safetensors weights",
                          "pickled .bin weights are not read", "safe_serialization=True")
    assert stage_lines(result.stdout) == []
    assert_nothing_in(artifacts)


def test_float16_variant_files_and_extra_folders(tiny_build, tree, build_copy, weights_copy):
    """A folder as many releases ship it: only `*.fp16.safetensors` weights (float16 values), and folders the
    build does not use (safety_checker/, feature_extractor/). It builds, and since the shards store float16,
    into exactly the tensor caches the float32 weights gave."""
    from safetensors.numpy import load_file, save_file

    for folder in ("safety_checker", "feature_extractor"):
        (weights_copy / folder).mkdir()
        (weights_copy / folder / "config.json").write_text("{}")
    for weights_file in weights_copy.glob("*/*.safetensors"):
        tensors = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in load_file(weights_file).items()}
        save_file(tensors, weights_file.with_suffix(".fp16.safetensors"), metadata={"format": "pt"})
        weights_file.unlink()
    variant, _, result = rebuild_with(build_copy, weights_copy, tree)
    assert result.returncode == 0, result.stderr
    # (the tensor caches come out byte-equal, so not even the manifest follows)
    assert sorted(stage_lines(result.stdout)) == [f"DUMP-PARAMS {variant}/{sub}" for sub in ("clip", "unet", "vae")]
    for sub in ("clip", "unet", "vae"):
        cache = json.loads((variant / sub / "params.v1" / "tensor-cache.json").read_text())
        original = json.loads((tiny_build.variant / sub / "params.v1" / "tensor-cache.json").read_text())
        assert cache["records"] == original["records"], sub


def test_corrupt_safetensors(tiny_build, build_copy, weights_copy):
    """A build of these weights that is up to date, then the UNet's weights file cut in half: dump-params
    (the one stage that reads weights) stops with one line naming the file, and the old tensor cache, its
    stamp and build.log stay as they were."""
    artifacts = build_copy(variant=MODEL).artifacts  # WEIGHTS=<folder> builds the variant named after the model
    variant = artifacts / MODEL
    before, everything_before = snapshot(variant), snapshot(artifacts)
    (weights_file,) = (weights_copy / "unet").glob("*.safetensors")
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])

    result = run_make(MODEL, tree=tiny_build.tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts, TUNING=tiny_build.tuning)
    assert_one_line_error(result, "error: dump-params:", str(weights_file), "not a readable safetensors file")
    assert stage_lines(result.stdout) == [f"DUMP-PARAMS {variant}/unet"]
    assert snapshot(variant) == before
    assert snapshot(artifacts) == everything_before


def test_weight_beyond_float16_range(tiny_build, build_copy, weights_copy):
    """A VAE weight that float16 shards would hold as inf: dump-params stops with one line naming the weights
    file and the tensor and saying how to keep float32; nothing already built changes. With PARAM_STORAGE=float32
    the same weights build."""
    from safetensors.numpy import load_file, save_file

    artifacts = build_copy(variant=MODEL).artifacts
    variant = artifacts / MODEL
    before = snapshot(variant)
    (weights_file,) = (weights_copy / "vae").glob("*.safetensors")
    tensors = load_file(weights_file)
    name = "decoder.conv_in.weight"
    tensors[name].flat[7] = -7.0e4  # past 65504, and past 65520, where rounding to float16 gives inf
    save_file(tensors, weights_file, metadata={"format": "pt"})

    variables = dict(WEIGHTS=weights_copy, ARTIFACTS=artifacts, TUNING=tiny_build.tuning)
    result = run_make(MODEL, tree=tiny_build.tree, **variables)
    assert_one_line_error(result, f"error: dump-params: {weights_file}: tensor {name!r} has 1 value(s) beyond "
                          "float16's range (largest magnitude 70000 > 65504)", "PARAM_STORAGE=float32")
    assert stage_lines(result.stdout) == [f"DUMP-PARAMS {variant}/vae"]
    assert snapshot(variant) == before

    as_float32 = run_make(MODEL, tree=tiny_build.tree, PARAM_STORAGE="float32", **variables)
    assert as_float32.returncode == 0, as_float32.stderr
    cache = json.loads((variant / "vae" / "params.v1" / "tensor-cache.json").read_text())
    assert cache["metadata"]["storage_dtype"] == "float32"


# ---- unknown model, wrong submodule --------------------------------------------------------------------------


def test_make_unknown_model_goal(tree, artifacts):
    result = run_make("sd99", tree=tree, WEIGHTS="tiny", ARTIFACTS=artifacts)
    assert_one_line_error(result, "sd99")
    assert_nothing_in(artifacts)


def test_make_reference_unknown_model(tree, artifacts, weights_copy, tmp_path):
    """Refused when make reads the Makefile, with generated or given weights alike."""
    out = tmp_path / "ref.png"
    for weights in ("tiny", weights_copy):
        result = run_make("reference", tree=tree, MODEL="sd99", WEIGHTS=weights, ARTIFACTS=artifacts, OUT=out)
        assert_one_line_error(result, "unknown model 'sd99'", "sd15", "sdxl")
    assert_nothing_in(artifacts)
    assert not out.exists() and list(tmp_path.glob(".ref.png*")) == []


def test_stage_unknown_model(tiny_build, artifacts):
    result = run_stage("trace", "--variant-dir", artifacts / "sd99-x", "--submodule", "unet",
                       "--weights", tiny_build.weights, tree=tiny_build.tree)
    assert_one_line_error(result, "error: trace:", "unknown model 'sd99'", "sd15")
    assert_nothing_in(artifacts)


@pytest.fixture(scope="module")
def variant_for_errors(tiny_build, tmp_path_factory) -> Path:
    """A copy of the built variant that stage scripts are pointed at with wrong arguments."""
    variant = tmp_path_factory.mktemp("errors") / VARIANT
    subprocess.run(["cp", "-a", str(tiny_build.variant), str(variant)], check=True)
    return variant


@pytest.mark.parametrize("stage, args", [
    ("trace", ["--weights", "WEIGHTS"]),
    ("transform", []),
    ("tune", []),
    ("export_lib", ["--target", "cpu"]),
    ("dump_params", ["--weights", "WEIGHTS"]),
])
def test_stage_wrong_submodule(tree, variant_for_errors, stage, args):
    before = snapshot(variant_for_errors)
    args = [str(variant_for_errors / "weights") if a == "WEIGHTS" else a for a in args]
    result = run_stage(stage, "--variant-dir", variant_for_errors, "--submodule", WRONG_SUBMODULE, *args, tree=tree)
    assert_one_line_error(result, f"error: {stage.replace('_', '-')}:", f"no submodule '{WRONG_SUBMODULE}'",
                          "clip, unet, vae, sched")
    assert snapshot(variant_for_errors) == before
    assert not (variant_for_errors / WRONG_SUBMODULE).exists()

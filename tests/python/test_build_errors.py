"""Bad input: each gives one clear error line and a non-zero exit, and writes nothing into the artifacts.

    .venv/bin/python -m pytest tests/python/test_build_errors.py -q

Through make where a user meets it (WEIGHTS unset, missing or incomplete; an unknown model; a corrupt
weights file), and through the stage scripts for what only they are given (a variant of an unknown model,
a wrong --submodule).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import MODEL, VARIANT, run_make, run_stage, snapshot, stage_lines

WRONG_SUBMODULE = "unett"


MAKE_BOOKKEEPING = "make: *** Waiting for unfinished jobs...."


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What the user is told: stderr, less make's own closing `make: *** [target] Error 1` line (it names
    the recipe that failed, after the stage has said why) and, in a parallel build, its note that it waits for
    the jobs already running."""
    return [line for line in result.stderr.splitlines()
            if line.strip() and line != MAKE_BOOKKEEPING
            and not (line.startswith("make: *** [") and "] Error " in line)]


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


def test_weights_folder_without_vae(tree, artifacts, weights_copy):
    subprocess.run(["rm", "-r", str(weights_copy / "vae")], check=True)
    result = run_make(MODEL, tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    line = assert_one_line_error(result, f"WEIGHTS={weights_copy}", "lacks vae/")
    assert "unet/" not in line.split("lacks")[1].split(":")[0], "names a folder that is there"
    assert_nothing_in(artifacts)
    # A stage given the same folder says the same.
    stage = run_stage("trace", "--variant-dir", artifacts / MODEL, "--submodule", "vae", "--weights", weights_copy,
                      tree=tree)
    assert_one_line_error(stage, "error: trace:", "lacks the folder(s) vae")
    assert_nothing_in(artifacts)


def test_complete_weights_folder_is_accepted(tree, weights_copy, artifacts):
    """The checks above must not refuse a good folder (they once did, for every folder): make gets as
    far as planning the build."""
    result = run_make(MODEL, "-n", tree=tree, WEIGHTS=weights_copy, ARTIFACTS=artifacts)
    assert result.returncode == 0, result.stderr
    trace = f"stages/trace.py --variant-dir {artifacts}/{MODEL} --submodule unet --weights {weights_copy}"
    assert trace in result.stdout
    assert_nothing_in(artifacts)


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
    out = tmp_path / "ref.png"
    generated = run_make("reference", tree=tree, MODEL="sd99", WEIGHTS="tiny", ARTIFACTS=artifacts, OUT=out)
    assert_one_line_error(generated, "unknown model 'sd99'", "sd15")
    folder = run_make("reference", tree=tree, MODEL="sd99", WEIGHTS=weights_copy, ARTIFACTS=artifacts,
                      OUT=out)
    assert_one_line_error(folder, "error: reference:", "unknown model 'sd99'", "sd15")
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

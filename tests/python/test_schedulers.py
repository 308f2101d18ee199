"""Schedulers: the dump-scheduler stage, the Python runners against diffusers' own step() loops, and the JS runners
(under node) against both.

    .venv/bin/python -m pytest tests/python/test_schedulers.py -q

SD 1.5's scheduler_config.json (PNDM, written out in scheduler_golden.py) goes through the real stage; for every
scheduler and every step count the file holds (1..50), diffusers' loop and the runner's loop (numpy lincomb)
see the same fake model outputs, in float32 and float64, and must agree to 1e-5 (relative, max norm) at every
step, as must the UNet inputs; timesteps and init_noise_sigma are checked too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduler_golden as g  # noqa: E402  (it also puts stages/ on sys.path)
from scheduler_golden import ROOT, SD15_SCHEDULER_CONFIG  # noqa: E402

import dump_scheduler  # noqa: E402
from lib.schedulers import FILES, FORMAT, SCHEDULERS, VERSION, ScheduleError, f32, load_scheduler  # noqa: E402

TOLERANCE = 1e-5
# diffusers 0.42.1 calls np.array on torch tensors in set_timesteps; numpy 2 warns about it, hundreds of times.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
STEPS = range(1, 51)  # the stage's default --steps 1-50


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def scheduler_dir(tmp_path_factory):
    return g.dump(tmp_path_factory.mktemp("schedulers"))


@pytest.fixture(scope="module")
def consts(scheduler_dir):
    return g.load_consts(scheduler_dir)


# ----------------------------------------------------------------------------------------------------------
# The stage.


def test_stage_writes_one_strict_json_per_scheduler(scheduler_dir, consts):
    for name, (class_name, file) in SCHEDULERS.items():
        text = (scheduler_dir / file).read_text()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{file}: {c} is not JSON"))
        c = consts[name]
        assert (c["format"], c["version"], c["scheduler"], c["diffusers_class"]) == (FORMAT, VERSION, name, class_name)
        assert c["config"]["beta_schedule"] == "scaled_linear" and c["config"]["steps_offset"] == 1
        assert sorted(map(int, c["schedules"])) == list(STEPS)
        for key, s in c["schedules"].items():
            assert s["num_inference_steps"] == int(key)
            assert len(s["timesteps"]) == s["num_steps"]
            assert all(isinstance(t, int) and 0 <= t < 2**31 for t in s["timesteps"])
            per_step = {"pndm": ["sample_coeff", "alpha_diff", "model_output_denom_coeff"],
                        "dpm": ["alpha", "sigma", "order", "c0", "c1", "c2"],
                        "euler": ["input_scale", "timesteps_exact"]}[name]
            assert all(len(s[k]) == s["num_steps"] for k in per_step), key
        assert (scheduler_dir / f"{file}.prov.json").exists()
    assert consts["pndm"]["schedules"]["20"]["num_steps"] == 21  # diffusers repeats one timestep
    assert consts["euler"]["schedules"]["20"]["sigmas"][-1] == 0.0


def test_stage_rewrites_nothing_when_nothing_changed(tmp_path, capsys):
    scheduler_dir = g.dump(tmp_path, steps=["20", "3-4"])
    mtimes = {f: (scheduler_dir / f).stat().st_mtime_ns for f in FILES.values()}
    assert sorted(map(int, json.loads((scheduler_dir / FILES["dpm"]).read_text())["schedules"])) == [3, 4, 20]
    capsys.readouterr()
    g.dump(tmp_path, steps=["20", "3-4"])
    assert capsys.readouterr().out.count("unchanged") == 3
    assert mtimes == {f: (scheduler_dir / f).stat().st_mtime_ns for f in FILES.values()}
    assert "dump-scheduler" in (tmp_path / g.VARIANT / "build.log").read_text()


def test_stage_errors_are_one_line(tmp_path):
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(ROOT / ".venv/bin/python"), str(ROOT / "stages/dump_scheduler.py"), "--variant-dir",
         str(tmp_path / "sd15-v"), *args], capture_output=True, text=True)
    missing = run("--weights", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "scheduler_config.json" in missing.stderr and "make sd15 WEIGHTS=tiny|random" in missing.stderr
    g.write_weights(tmp_path / "prk", dict(SD15_SCHEDULER_CONFIG, skip_prk_steps=False))
    prk = run("--weights", str(tmp_path / "prk"))
    assert prk.returncode == 1 and "skip_prk_steps=False is not supported" in prk.stderr
    assert run("--weights", str(tmp_path / "prk"), "--steps", "0-3").stderr.startswith("error: dump-scheduler:")


def test_parse_steps():
    assert dump_scheduler.parse_steps(["20", "1-3", "2"]) == [1, 2, 3, 20]
    for bad in (["0"], ["x"], ["5-3"]):
        with pytest.raises(dump_scheduler.StageError):
            dump_scheduler.parse_steps(bad)


# ----------------------------------------------------------------------------------------------------------
# The Python runners against diffusers.


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_runner_matches_diffusers_at_every_step(consts, name, dtype):
    lincomb = g.lincomb_f32 if dtype == np.float32 else g.lincomb_f64
    worst = 0.0
    for n in STEPS:
        num_steps = consts[name]["schedules"][str(n)]["num_steps"]
        noise, outputs = g.fake_model(num_steps, shape=(1, 4, 3, 3), dtype=dtype, seed=n)
        ref = g.diffusers_run(name, SD15_SCHEDULER_CONFIG, n, noise, outputs)
        ours = g.runner_run(name, consts[name], n, noise, outputs, lincomb)
        sched = ours["sched"]
        assert sched.num_steps == len(ref["timesteps"]) == num_steps
        assert sched.init_noise_sigma == ref["init_noise_sigma"]
        for i, t in enumerate(ref["timesteps"]):
            assert sched.timestep_exact(i) == t
            assert sched.timestep(i) == (round(t) if name == "euler" else t), (n, i)
            for what in ("scaled", "samples"):
                err = relative_error(ours[what][i], ref[what][i])
                assert err <= TOLERANCE, f"{name}, {n} steps, step {i}: {what} off diffusers' by {err:.2e}"
                worst = max(worst, err)
    print(f"{name} {np.dtype(dtype).name}: worst relative error {worst:.1e}")


def test_euler_timesteps_are_rounded_fractions(consts):
    s = consts["euler"]["schedules"]["20"]
    assert any(t != int(t) for t in s["timesteps_exact"])  # linspace spacing: 946.42...
    assert s["timesteps"] == [round(t) for t in s["timesteps_exact"]]


def test_coefficients_reach_lincomb_as_float32_of_float64_math(consts):
    """PNDM step 3: the Adams-Bashforth coefficients are formed in float64, then rounded once."""
    calls = []
    sched = load_scheduler(consts["pndm"], "pndm", 20)
    x = np.zeros(1)
    for i in range(4):
        calls.clear()
        sched.step(i, x, x, lambda c, t: calls.append(c) or t[0])
    s = consts["pndm"]["schedules"]["20"]
    k = s["alpha_diff"][3] / s["model_output_denom_coeff"][3]
    expected = [s["sample_coeff"][3], -k * 23 / 12, k * 16 / 12, -k * 5 / 12]
    assert calls == [[f32(c) for c in expected]]
    assert all(c == float(np.float32(c)) for c in calls[0])
    assert math.isclose(f32(0.1), float(np.float32(0.1)), rel_tol=0, abs_tol=0)


def test_runner_refuses_misuse(consts):
    with pytest.raises(ScheduleError, match="unknown scheduler"):
        load_scheduler(consts["pndm"], "ddim", 20)
    with pytest.raises(ScheduleError, match="not 'dpm'"):
        load_scheduler(consts["pndm"], "dpm", 20)
    with pytest.raises(ScheduleError, match="version"):
        load_scheduler(dict(consts["pndm"], version=VERSION + 1), "pndm", 20)
    with pytest.raises(ScheduleError, match="no schedule for 1000 steps; the file has 1..50"):
        load_scheduler(consts["pndm"], "pndm", 1000)
    sched = load_scheduler(consts["dpm"], "dpm", 20)
    with pytest.raises(ValueError, match="expected step"):
        sched.step(1, None, None, None)
    with pytest.raises(IndexError):
        sched.timestep(20)


# ----------------------------------------------------------------------------------------------------------
# The JS runners, under node.


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_runners_match(tmp_path):
    golden = g.main(tmp_path)
    result = subprocess.run(["node", "--test", str(ROOT / "tests/node/schedulers.test.mjs")], cwd=ROOT,
                            env=dict(os.environ, SCHEDULERS_GOLDEN=str(golden)), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout

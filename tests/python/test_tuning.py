"""make tune: a round proposes candidates, measures them through Dawn and records them in the tuning log; a
second round continues where the first stopped; the tune stage applies the log.

    .venv/bin/python -m pytest tests/python/test_tuning.py -q

Real tuning needs a GPU and the full-size model (bench/ runs it on the lent H100). Here the mechanics run on
the tiny model's heaviest kernel, one new tile configuration per round, measured on SwiftShader with
--allow-cpu-adapter (its timings mean nothing; that the pipeline carries them does).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import MODEL, VARIANT, clean_env, log_entries

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def tune(build, tuning, work, *goals):
    return build.make(*goals, SUBMODULE="unet", TRIALS=1, TUNE_VARIANT=VARIANT, TUNING=tuning, TUNE_WORK=work,
                      TUNE_FLAGS="--max-tasks 1", TUNE_MEASURE_FLAGS="--allow-cpu-adapter")


def history(tuning):
    return json.loads((tuning / MODEL / "unet" / "measurements.json").read_text())["measurements"]


def test_two_tuning_rounds_then_the_build_applies_the_log(build_copy, tmp_path):
    from tvm.s_tir import meta_schedule as ms

    build = build_copy()
    tuning, work = tmp_path / "tuning", tmp_path / "work"

    first = tune(build, tuning, work, "tune")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    measured = history(tuning)
    # the default schedule and one tile configuration of the one kernel, both timed
    assert [m["config"] is None for m in measured] == [True, False]
    assert all(m["ms"] and m["ms"] > 0 and m["error"] is None for m in measured)
    log = tuning / MODEL / "unet"
    database = ms.database.JSONDatabase(str(log / "database_workload.json"), str(log / "database_tuning_record.json"),
                                        allow_missing=False)
    records = database.get_all_tuning_records()
    assert len(records) == 1  # only the fastest schedule per kernel is kept
    assert float(records[0].run_secs[0]) * 1e3 == pytest.approx(min(m["ms"] for m in measured))

    second = tune(build, tuning, work, "tune")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    measured2 = history(tuning)
    assert measured2[:2] == measured and len(measured2) == 3  # resumed: one new configuration, nothing repeated
    assert measured2[2]["config"] not in [m["config"] for m in measured]
    again = tune(build, tuning, work, "tune-record")  # the same measurements are recorded once
    assert again.returncode != 0 and "tune-measure" in again.stderr
    assert history(tuning) == measured2

    # The next build applies the log: only the UNet's schedule changes (the minute-long link that follows is
    # held back with `make -o`; test_build_incremental.py shows it is due).
    before = log_entries(build.variant)
    rebuilt = build.make(MODEL, "-o", str(build.variant / ".link.stamp"), TUNING=tuning)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    ran = set(log_entries(build.variant)[len(before):])
    assert {("tune", "unet"), ("export-lib", "unet")} <= ran
    assert {sub for _, sub in ran} <= {"unet", "-"}


def test_tune_measure_refuses_a_cpu_adapter(tree, tmp_path):
    """Without --allow-cpu-adapter, SwiftShader's timings are refused with the reason, before anything is read."""
    result = subprocess.run(["node", "stages/tune_measure.mjs", "--work-dir", str(tmp_path)], cwd=tree,
                            env=clean_env(VK_ICD_FILENAMES="/usr/lib/chromium/vk_swiftshader_icd.json"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "SwiftShader" in result.stderr and "GPU" in result.stderr
    assert not (tmp_path / "measured.json").exists()

    allowed = subprocess.run(["node", "stages/tune_measure.mjs", "--work-dir", str(tmp_path), "--allow-cpu-adapter"],
                             cwd=tree, env=clean_env(VK_ICD_FILENAMES="/usr/lib/chromium/vk_swiftshader_icd.json"),
                             capture_output=True, text=True, timeout=120)
    assert allowed.returncode != 0 and "make tune-propose" in allowed.stderr

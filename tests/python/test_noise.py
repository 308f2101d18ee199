"""Seeded initial noise: stages/lib/noise.py and web/runtime/noise.js give the same float32 bits.

    .venv/bin/python -m pytest tests/python/test_noise.py -q

The JS side runs under node through tests/python/js/noise.mjs.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stages.lib.noise import MAX_SEED, PCG32, fdlibm_log, gaussian_noise  # noqa: E402

NOISE_JS = ROOT / "tests/python/js/noise.mjs"
SEEDS = [0, 1, 42, 2**31 - 1, 2**32 - 1, MAX_SEED]
SHAPES = [(1, 4, 64, 64), (1, 4, 16, 16), (3, 5, 7)]  # the last has an odd count: the last pair is cut


def node(*args: str, stdin: bytes | None = None) -> bytes:
    if shutil.which("node") is None:
        pytest.skip("needs node")
    result = subprocess.run(["node", str(NOISE_JS), *args], input=stdin, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def js_noise(seed: int, shape) -> np.ndarray:
    raw = node("noise", str(seed), ",".join(map(str, shape)))
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def test_pcg32_reference_vector():
    # pcg_basic's pcg32-demo: pcg32_srandom_r(&rng, 42u, 54u), then "Round 1".
    expected = [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E]
    rng = PCG32(42)
    assert [rng.next_u32() for _ in expected] == expected
    assert json.loads(node("u32", "42", str(len(expected)))) == expected


def test_check_values():
    # Pinned in noise.py's docstring, so a change that both ports make alike still fails here.
    expected = [0x3F4D0FDF, 0x3FB29D72, 0x3F564E03, 0x3F56C112, 0x3C937E31, 0xBC5ED4D0]
    assert gaussian_noise(42, (6,)).view(np.uint32).tolist() == expected
    assert js_noise(42, (6,)).view(np.uint32).tolist() == expected


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_js_matches_python_bit_for_bit(seed, shape):
    py = gaussian_noise(seed, shape)
    js = js_noise(seed, shape)
    assert py.dtype == np.float32 and py.shape == shape
    differ = np.flatnonzero(py.view(np.uint32) != js.view(np.uint32))
    assert differ.size == 0, f"{differ.size} values differ, first at {differ[:5]}: py {py.ravel()[differ[:5]]} js {js.ravel()[differ[:5]]}"


def _log_inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    x, y = rng.random(200_000) * 2 - 1, rng.random(200_000) * 2 - 1
    s = x * x + y * y
    polar = s[(s > 0) & (s < 1)]  # what gaussian_noise feeds the log
    near_one = 1 + rng.uniform(-2.0**-19, 2.0**-19, 2000)  # the |f| < 2**-20 branch
    special = [1.0, 0.5, 2.0, 2.0**-104, 5e-324, 2.2250738585072014e-308, 1e-310, 1.7976931348623157e308,
               np.nextafter(1.0, 0.0), np.nextafter(1.0, 2.0), math.e, 0.1, 0.7071067811865476, 1.4142135623730951]
    return np.concatenate([polar, near_one, rng.random(20_000) ** 30, np.array(special)])


def test_fdlibm_log_is_one_function_everywhere():
    xs = _log_inputs()
    out = np.frombuffer(node("log", stdin=xs.astype("<f8").tobytes()), dtype="<f8").reshape(-1, 2)
    js_port, v8_math_log = out[:, 0], out[:, 1]
    py_port = np.array([fdlibm_log(float(x)) for x in xs])
    # The two transcriptions agree, and equal V8's Math.log, which is fdlibm's code: the port is faithful.
    assert (py_port.view(np.uint64) == js_port.view(np.uint64)).all()
    assert (js_port.view(np.uint64) == v8_math_log.view(np.uint64)).all()
    # And it is a good log: within one ulp of the platform's (glibc's, here).
    ref = np.log(xs)
    assert (np.abs(py_port - ref) <= np.spacing(np.abs(ref)) + 0.0).all()


def test_statistics():
    noise = gaussian_noise(42, (1, 4, 64, 64)).astype(np.float64)
    n = noise.size  # 16384: the standard error of the mean is 1/128
    assert abs(noise.mean()) < 4 / math.sqrt(n)
    assert abs(noise.std() - 1) < 4 / math.sqrt(2 * n)
    assert abs((np.abs(noise) < 1).mean() - 0.682689) < 0.015
    assert abs((np.abs(noise) < 2).mean() - 0.954500) < 0.01
    assert np.isfinite(noise).all()


def test_seeds_differ_and_repeat():
    arrays = {seed: gaussian_noise(seed, (1, 4, 16, 16)) for seed in SEEDS}
    for a in SEEDS:
        for b in SEEDS:
            if a < b:
                assert not np.array_equal(arrays[a], arrays[b]), (a, b)
    assert np.array_equal(gaussian_noise(42, (1, 4, 16, 16)), arrays[42])
    # C-order filling from one stream: a smaller tensor is a prefix of a larger one for the same seed.
    assert np.array_equal(gaussian_noise(42, (1, 4, 64, 64)).ravel()[:1024], arrays[42].ravel())


@pytest.mark.parametrize("seed", [-1, 2**53, 1.5, True, "1"])
def test_seed_range_python(seed):
    with pytest.raises(ValueError):
        gaussian_noise(seed, (2,))


@pytest.mark.parametrize("seed", ["-1", "9007199254740992", "1.5", "true", '"1"', "null"])
def test_seed_range_js(seed):
    assert node("seed", seed).decode().startswith("RangeError: seed must be an integer in 0 .. 2**53 - 1")


def test_seed_range_ends_accepted():
    assert node("seed", "0").decode().strip() == node("seed", str(MAX_SEED)).decode().strip() == "ok"
    assert np.array_equal(js_noise(MAX_SEED, (8,)).view(np.uint32), gaussian_noise(MAX_SEED, (8,)).view(np.uint32))
    assert struct.pack("<d", float(MAX_SEED)) == struct.pack("<d", 2.0**53 - 1)  # exact as a JS Number

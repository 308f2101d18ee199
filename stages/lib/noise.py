"""Seeded Gaussian noise, the same bit for bit here and in web/runtime/noise.js.

    gaussian_noise(seed, shape) -> np.ndarray float32 of `shape`

The initial latents of a generation are `gaussian_noise(seed, (1, 4, H, W))` (times the scheduler's
init_noise_sigma), so a seed gives the same image in the browser, in Node and in Python. The definition below
is complete: anyone can reimplement it and get the same bits.

Seed: an integer 0 <= seed <= 2**53 - 1 (every such integer is exact as a JavaScript Number); anything else
is an error, on both sides. The page offers 0 .. 2**32 - 1.

1. Generator: PCG32, i.e. PCG-XSH-RR with 64-bit state and 32-bit output (O'Neill, pcg-random.org,
   pcg_basic.c), all arithmetic modulo 2**64:
       step:   old = state;  state = old * 6364136223846793005 + inc
       output: xorshifted = uint32(((old >> 18) ^ old) >> 27);  rot = old >> 59
               out = (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31)), as uint32
   seeded as pcg32_srandom_r(seed, 54): inc = (54 << 1) | 1 = 109; state = 0; step; state += seed; step.
   (Check: seed 42 gives 0xa15c02b7 0x7b47f409 0xba1d3330 ..., the output of pcg_basic's pcg32-demo.)
2. Uniform double in [0, 1) from two outputs a then b (genrand_res53 of MT19937):
       u = ((a >> 5) * 67108864 + (b >> 6)) / 9007199254740992          (exact: 27 + 26 bits over 2**53)
3. Normal pairs, Marsaglia's polar method, all in IEEE 754 float64 (round to nearest even), evaluated in
   exactly this order (no fused multiply-add):
       x = 2*u1 - 1;  y = 2*u2 - 1          (u1, u2: the next two uniforms, u1 first)
       s = x*x + y*y
       if s >= 1 or s == 0: reject the pair and draw u1, u2 again
       f = sqrt((-2 * log(s)) / s)
       values x*f, then y*f
   `log` is fdlibm's __ieee754_log (e_log.c, Sun Microsystems 1993), transcribed below as `fdlibm_log`: it
   uses only +, -, *, / and the bits of the float64, so it gives the same result everywhere.
4. Each value is rounded to float32 (round to nearest even) and the output is filled in C order, the values
   of each accepted pair in turn; when the count is odd the last value of the last pair is dropped.

Check values: gaussian_noise(42, (6,)) has the float32 bit patterns 3f4d0fdf 3fb29d72 3f564e03 3f56c112
3c937e31 bc5ed4d0 (0.80102342, 1.39542985, 0.83712786, 0.83888352, 0.01800451, -0.01360054). A tensor is
the prefix of a larger one for the same seed, in C order.

Why not the platform's log: sqrt, +, -, *, / are correctly rounded by IEEE 754, so they agree everywhere, but
log is not required to be. glibc's log (Python's math.log on Linux) and V8's Math.log (which is this fdlibm
log) differ in the last bit for about 5% of inputs in (0, 1); Safari's JavaScriptCore calls the system libm.
A last-bit difference in f survives the rounding to float32 only rarely, but rarely is not "bit for bit".
tests/python/test_noise.py checks that the JS gives the same bits as this file, and that the JS transcription
of fdlibm_log equals V8's Math.log.
"""

from __future__ import annotations

import math
import struct

import numpy as np

MAX_SEED = 2**53 - 1

_MASK64 = (1 << 64) - 1
_MULTIPLIER = 6364136223846793005
_STREAM = 54


class PCG32:
    """PCG-XSH-RR 64/32, seeded as pcg_basic's pcg32_srandom_r(seed, stream)."""

    def __init__(self, seed: int, stream: int = _STREAM):
        self.inc = ((stream << 1) | 1) & _MASK64
        self.state = 0
        self.next_u32()
        self.state = (self.state + seed) & _MASK64
        self.next_u32()

    def next_u32(self) -> int:
        old = self.state
        self.state = (old * _MULTIPLIER + self.inc) & _MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF

    def next_double(self) -> float:
        a = self.next_u32() >> 5
        b = self.next_u32() >> 6
        return (a * 67108864.0 + b) / 9007199254740992.0


# fdlibm e_log.c constants, with their bit patterns.
_LN2_HI = 6.93147180369123816490e-01  # 3fe62e42 fee00000
_LN2_LO = 1.90821492927058770002e-10  # 3dea39ef 35793c76
_TWO54 = 1.80143985094819840000e16  # 43500000 00000000
_LG1 = 6.666666666666735130e-01  # 3FE55555 55555593
_LG2 = 3.999999999940941908e-01  # 3FD99999 9997FA04
_LG3 = 2.857142874366239149e-01  # 3FD24924 94229359
_LG4 = 2.222219843214978396e-01  # 3FCC71C5 1D8E78AF
_LG5 = 1.818357216161805012e-01  # 3FC74664 96CB03DE
_LG6 = 1.531383769920937332e-01  # 3FC39A09 D078C69F
_LG7 = 1.479819860511658591e-01  # 3FC2F112 DF3E5244


def _words(x: float) -> tuple[int, int]:
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    return bits >> 32, bits & 0xFFFFFFFF


def _from_words(hi: int, lo: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", (hi << 32) | lo))[0]


def fdlibm_log(x: float) -> float:
    """Natural log, fdlibm's __ieee754_log line by line, for finite x > 0 (all this module needs)."""
    hx, lx = _words(x)
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"fdlibm_log is defined here for finite x > 0, got {x!r}")
    k = 0
    if hx < 0x00100000:  # subnormal: scale up
        k -= 54
        x *= _TWO54
        hx, lx = _words(x)
    k += (hx >> 20) - 1023
    hx &= 0x000FFFFF
    i = (hx + 0x95F64) & 0x100000
    x = _from_words(hx | (i ^ 0x3FF00000), lx)  # normalize x or x/2
    k += i >> 20
    f = x - 1.0
    if (0x000FFFFF & (2 + hx)) < 3:  # |f| < 2**-20
        if f == 0.0:
            if k == 0:
                return 0.0
            dk = float(k)
            return dk * _LN2_HI + dk * _LN2_LO
        R = f * f * (0.5 - 0.33333333333333333 * f)
        if k == 0:
            return f - R
        dk = float(k)
        return dk * _LN2_HI - ((R - dk * _LN2_LO) - f)
    s = f / (2.0 + f)
    dk = float(k)
    z = s * s
    i = hx - 0x6147A
    w = z * z
    j = 0x6B851 - hx
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    i |= j
    R = t2 + t1
    if i > 0:
        hfsq = 0.5 * f * f
        if k == 0:
            return f - (hfsq - s * (hfsq + R))
        return dk * _LN2_HI - ((hfsq - (s * (hfsq + R) + dk * _LN2_LO)) - f)
    if k == 0:
        return f - s * (f - R)
    return dk * _LN2_HI - ((s * (f - R) - dk * _LN2_LO) - f)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be an integer in 0 .. 2**53 - 1, got {seed!r}")
    return int(seed)


def gaussian_noise(seed: int, shape) -> np.ndarray:
    """Standard normal float32 noise of `shape`, defined bit for bit in the module docstring."""
    rng = PCG32(check_seed(seed))
    shape = tuple(int(d) for d in shape)
    count = math.prod(shape)
    values: list[float] = []
    while len(values) < count:
        x = 2.0 * rng.next_double() - 1.0
        y = 2.0 * rng.next_double() - 1.0
        s = x * x + y * y
        if s >= 1.0 or s == 0.0:
            continue
        f = math.sqrt((-2.0 * fdlibm_log(s)) / s)
        values.append(x * f)
        values.append(y * f)
    return np.array(values[:count], dtype=np.float64).astype(np.float32).reshape(shape)

// Seeded Gaussian noise: the same bits as stages/lib/noise.py, whose docstring is the definition
// (PCG32 seeded as pcg32_srandom_r(seed, 54), 53-bit uniforms from two outputs, Marsaglia's polar method in
// float64 with fdlibm's log, values rounded to float32 in C order). tests/python/test_noise.py compares the two.
//
//     gaussianNoise(seed, shape) -> Float32Array of shape.reduce((a, b) => a * b, 1) values
//
// seed: an integer 0 <= seed <= 2**53 - 1 (a Number or a BigInt); anything else throws a RangeError.
// No DOM: runs in the page's worker and in Node.

export const MAX_SEED = Number.MAX_SAFE_INTEGER; // 2**53 - 1

const MASK64 = (1n << 64n) - 1n;
const MULTIPLIER = 6364136223846793005n;
const STREAM = 54n;

// PCG-XSH-RR 64/32 (pcg_basic.c), seeded as pcg32_srandom_r(seed, stream). The state is a BigInt.
export class PCG32 {
  constructor(seed, stream = STREAM) {
    this.inc = ((BigInt(stream) << 1n) | 1n) & MASK64;
    this.state = 0n;
    this.nextU32();
    this.state = (this.state + BigInt(seed)) & MASK64;
    this.nextU32();
  }

  nextU32() {
    const old = this.state;
    this.state = (old * MULTIPLIER + this.inc) & MASK64;
    const xorshifted = Number((((old >> 18n) ^ old) >> 27n) & 0xffffffffn);
    const rot = Number(old >> 59n);
    // >>> 0 makes the result unsigned; for rot = 0, << 0 leaves xorshifted (as ((32 - 0) & 31) = 0 says).
    return ((xorshifted >>> rot) | (xorshifted << ((32 - rot) & 31))) >>> 0;
  }

  nextDouble() {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}

// fdlibm e_log.c constants, with their bit patterns.
const LN2_HI = 6.93147180369123816490e-01; // 3fe62e42 fee00000
const LN2_LO = 1.90821492927058770002e-10; // 3dea39ef 35793c76
const TWO54 = 1.80143985094819840000e16; // 43500000 00000000
const LG1 = 6.666666666666735130e-01; // 3FE55555 55555593
const LG2 = 3.999999999940941908e-01; // 3FD99999 9997FA04
const LG3 = 2.857142874366239149e-01; // 3FD24924 94229359
const LG4 = 2.222219843214978396e-01; // 3FCC71C5 1D8E78AF
const LG5 = 1.818357216161805012e-01; // 3FC74664 96CB03DE
const LG6 = 1.531383769920937332e-01; // 3FC39A09 D078C69F
const LG7 = 1.479819860511658591e-01; // 3FC2F112 DF3E5244

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // index of the high word
const LO = 1 - HI;

// Natural log, fdlibm's __ieee754_log line by line, for finite x > 0. Not Math.log: JavaScriptCore (Safari)
// takes it from the system libm, whose last bit may differ. V8's Math.log is this same fdlibm code.
export function fdlibmLog(x) {
  if (!(x > 0 && x < Infinity)) throw new RangeError(`fdlibmLog is defined here for finite x > 0, got ${x}`);
  f64[0] = x;
  let hx = u32[HI];
  let k = 0;
  if (hx < 0x00100000) { // subnormal: scale up
    k -= 54;
    x *= TWO54;
    f64[0] = x;
    hx = u32[HI];
  }
  k += (hx >> 20) - 1023;
  hx &= 0x000fffff;
  let i = (hx + 0x95f64) & 0x100000;
  u32[HI] = hx | (i ^ 0x3ff00000); // normalize x or x/2 (the low word is still x's)
  x = f64[0];
  k += i >> 20;
  const f = x - 1.0;
  if ((0x000fffff & (2 + hx)) < 3) { // |f| < 2**-20
    if (f === 0) {
      if (k === 0) return 0;
      return k * LN2_HI + k * LN2_LO;
    }
    const R = f * f * (0.5 - 0.33333333333333333 * f);
    if (k === 0) return f - R;
    return k * LN2_HI - ((R - k * LN2_LO) - f);
  }
  const s = f / (2.0 + f);
  const dk = k;
  const z = s * s;
  i = hx - 0x6147a;
  const w = z * z;
  const j = 0x6b851 - hx;
  const t1 = w * (LG2 + w * (LG4 + w * LG6));
  const t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
  i |= j;
  const R = t2 + t1;
  if (i > 0) {
    const hfsq = 0.5 * f * f;
    if (k === 0) return f - (hfsq - s * (hfsq + R));
    return dk * LN2_HI - ((hfsq - (s * (hfsq + R) + dk * LN2_LO)) - f);
  }
  if (k === 0) return f - s * (f - R);
  return dk * LN2_HI - ((s * (f - R) - dk * LN2_LO) - f);
}

export function checkSeed(seed) {
  const ok = typeof seed === "bigint"
    ? seed >= 0n && seed <= BigInt(MAX_SEED)
    : Number.isSafeInteger(seed) && seed >= 0;
  if (!ok) throw new RangeError(`seed must be an integer in 0 .. 2**53 - 1, got ${seed}`);
  return BigInt(seed);
}

// Standard normal float32 noise, C order, for a tensor of `shape` (e.g. [1, 4, 64, 64]).
export function gaussianNoise(seed, shape) {
  const rng = new PCG32(checkSeed(seed));
  const count = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(count); // storing a float64 into it rounds to nearest even
  let n = 0;
  while (n < count) {
    const x = 2 * rng.nextDouble() - 1;
    const y = 2 * rng.nextDouble() - 1;
    const s = x * x + y * y;
    if (s >= 1 || s === 0) continue;
    const f = Math.sqrt((-2 * fdlibmLog(s)) / s);
    out[n++] = x * f;
    if (n < count) out[n++] = y * f;
  }
  return out;
}

// Helper of tests/python/test_noise.py.
//   node noise.mjs noise SEED D0,D1,...   -> the float32 noise, raw little-endian bytes on stdout
//   node noise.mjs u32 SEED COUNT         -> the first COUNT PCG32 outputs, as JSON
//   node noise.mjs log < doubles          -> for each float64 on stdin: fdlibmLog(x), Math.log(x) (raw float64)
//   node noise.mjs seed VALUE             -> prints "ok" or the RangeError message (VALUE parsed as a JS number)
import { readFileSync } from "node:fs";
import { PCG32, fdlibmLog, gaussianNoise } from "../../../web/runtime/noise.js";

const [mode, a, b] = process.argv.slice(2);
if (mode === "noise") {
  const noise = gaussianNoise(Number(a), b.split(",").map(Number));
  process.stdout.write(new Uint8Array(noise.buffer));
} else if (mode === "u32") {
  const rng = new PCG32(BigInt(a));
  process.stdout.write(JSON.stringify(Array.from({ length: Number(b) }, () => rng.nextU32())));
} else if (mode === "log") {
  const buf = readFileSync(0);
  const x = new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  const out = new Float64Array(2 * x.length);
  x.forEach((v, i) => { out[2 * i] = fdlibmLog(v); out[2 * i + 1] = Math.log(v); });
  process.stdout.write(new Uint8Array(out.buffer));
} else if (mode === "seed") {
  try { gaussianNoise(JSON.parse(a), [2]); console.log("ok"); } catch (e) { console.log(`${e.name}: ${e.message}`); }
} else {
  throw new Error(`unknown mode ${mode}`);
}

// web/runtime/params.js without a GPU: float16 shards widened to the float32 a float32 library takes, exactly;
// float32 shards narrowed to the float16 a float16 library takes, rounded to nearest even; every other dtype
// mismatch refused with the file and tensor named.
//
//   node --test tests/node/params.test.mjs        (make test-node runs it with the other Node tests)
//
// loadTensorCache gets a stand-in for the tvmjs handle that records what would be allocated and uploaded;
// tests/python/test_params_storage.py checks the same widening against numpy, and tests/python/test_webgpu.py
// the whole load on WebGPU.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { FormatError } from "../../web/runtime/errors.js";
import { gpuTensorBytes, libraryDtypes, loadTensorCache, narrowToFloat16, widenFloat16 } from "../../web/runtime/params.js";

// The value of half-precision bit pattern h by IEEE 754's definition, as a float32 bit pattern (every half is
// exactly a float32). NaNs keep sign and payload, the payload moved to the top of the float32 mantissa.
function expectedBits(h) {
  const sign = h >> 15 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0x1f && fraction !== 0) return (((h & 0x8000) << 16) | 0x7f800000 | (fraction << 13)) >>> 0;
  const value = exponent === 0x1f ? sign * Infinity
    : exponent === 0 ? sign * fraction * 2 ** -24
      : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  return new Uint32Array(Float32Array.of(value).buffer)[0];
}

test("widenFloat16 is exact for all 65536 half values: zeros, subnormals, normals, infinities, NaNs", () => {
  const halves = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const bits = widenFloat16(halves);
  const values = new Float32Array(bits.buffer);
  assert.equal(bits.length, 65536);
  const wrong = [];
  for (let h = 0; h < 65536; ++h) if (bits[h] !== expectedBits(h)) wrong.push(h);
  assert.deepEqual(wrong.slice(0, 5).map((h) => h.toString(16)), [], `${wrong.length} wrong`);
  // Landmarks, by value.
  assert.ok(Object.is(values[0x0000], 0) && Object.is(values[0x8000], -0));
  assert.equal(values[0x0001], 2 ** -24); // smallest subnormal
  assert.equal(values[0x03ff], 1023 * 2 ** -24); // largest subnormal
  assert.equal(values[0x0400], 2 ** -14); // smallest normal
  assert.equal(values[0x3c00], 1);
  assert.equal(values[0x7bff], 65504);
  assert.equal(values[0xfbff], -65504);
  assert.equal(values[0x7c00], Infinity);
  assert.equal(values[0xfc00], -Infinity);
  for (const h of [0x7c01, 0x7e00, 0x7fff, 0xfe00]) assert.ok(Number.isNaN(values[h]), h.toString(16));
  // A reused output buffer is filled, not reallocated.
  const out = new Uint32Array(3);
  assert.equal(widenFloat16(Uint16Array.of(0x3c00, 0xc000, 0x3555), out), out);
  assert.deepEqual(Array.from(new Float32Array(out.buffer)), [1, -2, 0.333251953125]);
});

// ---- loadTensorCache against a stand-in handle -----------------------------------------------------------------

function fakeHandle() {
  const allocated = [];
  const tensor = (shape, dtype, device) => {
    const t = { shape, dtype, device, bytes: null, disposed: false };
    t.copyFromRawBytes = (data) => {
      const bytesPer = { float32: 4, float16: 2, int32: 4 }[dtype];
      assert.equal(data.length, shape.reduce((n, d) => n * d, 1) * bytesPer, "copyFromRawBytes size (tvmjs checks it)");
      t.bytes = Uint8Array.from(data); // writeBuffer copies at once
    };
    t.dispose = () => { t.disposed = true; };
    allocated.push(t);
    return t;
  };
  const tvm = { withNewScope: (f) => f(), detachFromCurrentScope: (t) => t, empty: tensor };
  return { handle: { tvm, gpu: "gpu" }, allocated };
}

const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");
const halfBytes = (...bits) => new Uint8Array(Uint16Array.from(bits).buffer);

/** A one-shard cache of `tensors` [{name, dtype (stored), shape, bytes, takes (library dtype)}], byte-packed. */
function cacheOf(tensors, { pad = 0 } = {}) {
  const parts = [];
  const records = [];
  let offset = pad;
  for (const t of tensors) {
    records.push({ name: t.name, shape: t.shape, dtype: t.dtype, format: "raw", byteOffset: offset, nbytes: t.bytes.length });
    parts.push(t.bytes);
    offset += t.bytes.length;
  }
  const shard = new Uint8Array(offset);
  let at = pad;
  for (const p of parts) { shard.set(p, at); at += p.length; }
  const cache = {
    metadata: { format: "websd-tensor-cache", version: 1, family: "sd15", submodule: "unet", function: "unet",
                param_names: tensors.map((t) => t.name), param_dtypes: tensors.map((t) => t.takes) },
    records: [{ dataPath: "params_shard_0.bin", format: "raw-shard", nbytes: shard.length, sha256: sha(shard), records }],
  };
  return { cache, shard };
}

const CACHE_URL = "https://example.test/models/sd15-tiny/unet/params.v1/tensor-cache.json";
const SHARD_URL = "https://example.test/models/sd15-tiny/unet/params.v1/params_shard_0.bin";

async function load(cache, shard, dtypesOfLibrary = undefined) {
  const { handle, allocated } = fakeHandle();
  const fetched = [];
  const fetchFile = async (url, opts) => { fetched.push([url, opts]); return shard; };
  try {
    return { tensors: await loadTensorCache(handle, cache, CACHE_URL, fetchFile, dtypesOfLibrary), allocated, fetched };
  } catch (err) {
    err.allocated = allocated;
    throw err;
  }
}

test("a float16 record the library takes as float32 becomes a float32 tensor holding the widened values", async () => {
  const f32 = new Uint8Array(Float32Array.of(0.5, -3, 7).buffer);
  // An odd first offset puts the float16 data off 2-byte alignment in the shard buffer: copied, not viewed.
  for (const pad of [0, 1]) {
    const { cache, shard } = cacheOf([
      { name: "w", dtype: "float16", takes: "float32", shape: [2, 2], bytes: halfBytes(0x3c00, 0x0001, 0xfbff, 0x7c00) },
      { name: "b", dtype: "float32", takes: "float32", shape: [3], bytes: f32 },
      { name: "h", dtype: "float16", takes: "float16", shape: [2], bytes: halfBytes(0x3c00, 0x4000) },
    ], { pad });
    const { tensors, allocated, fetched } = await load(cache, shard);
    assert.deepEqual(fetched, [[SHARD_URL, { sha256: cache.records[0].sha256, bytes: shard.length }]]);
    assert.deepEqual(tensors.map((t) => [t.dtype, t.shape, t.device]),
      [["float32", [2, 2], "gpu"], ["float32", [3], "gpu"], ["float16", [2], "gpu"]]);
    assert.deepEqual(Array.from(new Float32Array(tensors[0].bytes.buffer)), [1, 2 ** -24, -65504, Infinity]);
    assert.deepEqual(tensors[1].bytes, f32);
    assert.deepEqual(tensors[2].bytes, halfBytes(0x3c00, 0x4000));
    assert.equal(allocated.length, 3);
  }
});

test("gpuTensorBytes counts the library's dtype, not the stored one", () => {
  const { cache } = cacheOf([
    { name: "w", dtype: "float16", takes: "float32", shape: [3, 4], bytes: new Uint8Array(24) },
    { name: "b", dtype: "float32", takes: "float32", shape: [5], bytes: new Uint8Array(20) },
  ]);
  assert.deepEqual(gpuTensorBytes(cache, CACHE_URL), [48, 20]);
  assert.deepEqual([...libraryDtypes(cache, CACHE_URL)], [["w", "float32"], ["b", "float32"]]);
});

test("narrowToFloat16 gives back every half it is given widened, and rounds to nearest even in between", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, h) => h);
  const { halves, overflow } = narrowToFloat16(new Float32Array(widenFloat16(all).buffer));
  assert.equal(overflow, -1);
  for (let h = 0; h < 65536; ++h) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok((halves[h] & 0x7c00) === 0x7c00 && (halves[h] & 0x3ff) !== 0, `NaN ${h} stays NaN`);
    else assert.equal(halves[h], h, `half ${h.toString(16)}`);
  }
  const cases = [
    [1 + 2 ** -11, 0x3c00], // halfway between 1 and the next half: to the even one, 1
    [1 + 3 * 2 ** -11, 0x3c02], // halfway, odd below: up
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway: up
    [65504, 0x7bff], [65519.99, 0x7bff], // the largest half, and the top of its rounding interval
    [2 ** -25, 0x0000], [2 ** -25 * 1.5, 0x0001], [3 * 2 ** -25, 0x0002], // subnormal ties and rounding
    [2 ** -14 - 2 ** -25, 0x0400], // rounds up out of the subnormals into the smallest normal
    [-2.5, 0xc100], [-0, 0x8000], [2 ** -30, 0x0000], [-Infinity, 0xfc00],
  ];
  const narrowed = narrowToFloat16(Float32Array.from(cases.map(([x]) => x)));
  assert.deepEqual(Array.from(narrowed.halves), cases.map(([, h]) => h));
  assert.equal(narrowed.overflow, -1);
  assert.equal(narrowToFloat16(Float32Array.of(1, 65520, 1e9)).overflow, 1, "65520 and above would be inf");
});

test("a float32 record a float16 library takes becomes a float16 tensor (the library's dtypes, not the cache's)", async () => {
  const { cache, shard } = cacheOf([
    { name: "w", dtype: "float32", takes: "float32", shape: [2, 2], bytes: new Uint8Array(Float32Array.of(1, -2.5, 1 + 2 ** -11, 65504).buffer) },
    { name: "h", dtype: "float16", takes: "float32", shape: [2], bytes: halfBytes(0x3c00, 0x4000) },
  ]);
  const { tensors } = await load(cache, shard, ["float16", "float16"]);
  assert.deepEqual(tensors.map((t) => t.dtype), ["float16", "float16"]);
  assert.deepEqual(tensors[0].bytes, halfBytes(0x3c00, 0xc100, 0x3c00, 0x7bff));
  assert.deepEqual(tensors[1].bytes, halfBytes(0x3c00, 0x4000));
  assert.deepEqual(gpuTensorBytes(cache, CACHE_URL, ["float16", "float16"]), [8, 4]);

  const big = cacheOf([{ name: "w", dtype: "float32", takes: "float32", shape: [2], bytes: new Uint8Array(Float32Array.of(1, 1e6).buffer) }]);
  await assert.rejects(load(big.cache, big.shard, ["float16"]), (err) => err instanceof FormatError &&
    err.message === `${SHARD_URL}: tensor w holds 1000000, beyond float16's range: this model needs float32 compute ` +
      "(load it with compute float32)" && err.allocated.every((t) => t.disposed));
  await assert.rejects(load(big.cache, big.shard, ["float16", "float16"]), (err) => err instanceof FormatError &&
    err.message.includes("it has 1 parameters, the library takes 2"));
});

for (const [stored, takes, bytes] of [
  ["int32", "float32", new Uint8Array(8)], // a different kind of number
  ["float16", "int32", new Uint8Array(4)],
  ["int32", "float16", new Uint8Array(8)],
]) {
  test(`a ${stored} record the library takes as ${takes} is a FormatError naming the file and the tensor`, async () => {
    const { cache, shard } = cacheOf([
      { name: "ok", dtype: "float16", takes: "float32", shape: [2], bytes: halfBytes(0x3c00, 0x3c00) },
      { name: "p_unet_conv_in_weight", dtype: stored, takes, shape: [2], bytes },
    ]);
    await assert.rejects(load(cache, shard), (err) => {
      assert.ok(err instanceof FormatError, err);
      assert.equal(err.message, `${SHARD_URL}: tensor p_unet_conv_in_weight is stored as ${stored}, but the library ` +
        `takes ${takes}; rebuild the model`);
      assert.ok(err.allocated.every((t) => t.disposed), "tensors already made are freed");
      return true;
    });
  });
}

test("a cache that does not say what the library takes, or whose record does not fit its bytes, is a FormatError", async () => {
  const tensors = [{ name: "w", dtype: "float16", takes: "float32", shape: [2], bytes: halfBytes(1, 2) }];
  const { cache, shard } = cacheOf(tensors);
  delete cache.metadata.param_dtypes;
  await assert.rejects(load(cache, shard), (err) => err instanceof FormatError &&
    err.message === `${CACHE_URL}: the tensor cache does not say which dtype the library takes for each parameter ` +
      "(metadata.param_dtypes); rebuild the model");
  assert.throws(() => gpuTensorBytes(cache, CACHE_URL), FormatError);

  const short = cacheOf(tensors);
  short.cache.records[0].records[0].shape = [3]; // 3 halves in 4 bytes
  await assert.rejects(load(short.cache, short.shard), (err) => err instanceof FormatError &&
    err.message.startsWith(`${SHARD_URL}: tensor w (float16 [3]) does not fit its 4 bytes`));
});

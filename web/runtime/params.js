// Weights: a tvmjs tensor cache (tensor-cache.json + shards, written by stages/dump_params.py) onto the GPU.
// Each shard is verified against the sha256 in the cache file before a byte of it is used.
//
// Shards store float32 parameters as float16 by default (half the download). Each record keeps its stored
// dtype; the library says which dtype it takes per parameter (the manifest's `param_dtypes`: float32 for a
// submodule's float32 library, float16 for its float16 one; metadata.param_dtypes records the float32
// library's). A record in another dtype is converted on the CPU, one tensor at a time: float16 -> float32 is
// exact, float32 -> float16 rounds to nearest even, so the GPU gets the same values as the CPU pipeline
// (stages/lib/tensor_cache.py).

import { FormatError } from "./errors.js";
import { verify } from "./integrity.js";

export const CACHE_FORMAT = "websd-tensor-cache";
export const CACHE_VERSION = 1;

// float32 -> 4, float16 -> 2, int8 -> 1: TVM's dtype names end in their width in bits.
const dtypeBytes = (dtype) => Number(/\d+$/.exec(dtype)?.[0] ?? NaN) / 8;
const elements = (shape) => shape.reduce((n, d) => n * d, 1);
// (stored -> taken by the library) conversions a loader may make; any other mismatch is a broken cache.
const CONVERSIONS = new Set(["float16->float32", "float32->float16"]);

/** Checks a parsed tensor-cache.json against what the library expects of this submodule. */
export function checkTensorCache(cache, { family, submodule, url }) {
  const meta = cache?.metadata ?? {};
  if (meta.format !== CACHE_FORMAT || meta.version !== CACHE_VERSION) {
    throw new FormatError(
      `${url}: tensor cache format ${meta.format} v${meta.version}, this page reads ${CACHE_FORMAT} v${CACHE_VERSION}; rebuild the model`,
    );
  }
  if (meta.family !== family || meta.submodule !== submodule) {
    throw new FormatError(`${url} holds weights of ${meta.family}/${meta.submodule}, not ${family}/${submodule}`);
  }
  return cache;
}

/**
 * {name -> dtype the library takes} for every parameter of `cache`: `libraryDtypes` (the library's, in
 * param_names order, from the manifest) or else the float32 library's (metadata.param_dtypes).
 */
export function libraryDtypes(cache, url, libraryDtypes = undefined) {
  const { param_names: names, param_dtypes: float32Dtypes } = cache.metadata;
  const dtypes = libraryDtypes ?? float32Dtypes;
  if (!Array.isArray(names) || !Array.isArray(dtypes) || dtypes.length !== names.length) {
    throw new FormatError(`${url}: the tensor cache does not say which dtype the library takes for each parameter ` +
      `(${libraryDtypes ? "it has " + names?.length + " parameters, the library takes " + dtypes.length : "metadata.param_dtypes"}); ` +
      "rebuild the model");
  }
  return new Map(names.map((n, i) => [n, dtypes[i]]));
}

/** Bytes each parameter takes on the GPU: in the dtype the library takes, which may differ from the stored one. */
export function gpuTensorBytes(cache, url, dtypesOfLibrary = undefined) {
  const dtypes = libraryDtypes(cache, url, dtypesOfLibrary);
  return cache.records.flatMap((shard) => shard.records.filter((r) => dtypes.has(r.name))
    .map((r) => elements(r.shape) * dtypeBytes(dtypes.get(r.name))));
}

// float16 bit pattern -> float32 bit pattern, for all 65536 halves (built on first use: 256 KB). Bit patterns,
// not numbers, all the way to the GPU: a NaN read into a JS number may lose its payload.
let halfTable = null;
function halfToFloatTable() {
  if (halfTable) return halfTable;
  halfTable = new Uint32Array(65536);
  for (let h = 0; h < 65536; ++h) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >> 10) & 0x1f;
    let mantissa = h & 0x3ff;
    let bits;
    if (exponent === 0x1f) {
      bits = sign | 0x7f800000 | (mantissa << 13); // inf, NaN (payload kept)
    } else if (exponent !== 0) {
      bits = sign | ((exponent + 112) << 23) | (mantissa << 13); // rebias 15 -> 127
    } else if (mantissa === 0) {
      bits = sign; // +-0
    } else {
      // A subnormal half (mantissa * 2^-24) is a normal float32: shift the leading 1 into the implicit bit.
      let e = 113;
      while ((mantissa & 0x400) === 0) {
        mantissa <<= 1;
        e -= 1;
      }
      bits = sign | (e << 23) | ((mantissa & 0x3ff) << 13);
    }
    halfTable[h] = bits >>> 0;
  }
  return halfTable;
}

/** float16 bit patterns -> float32 bit patterns, exactly; `out` (a Uint32Array of the same length) is reused if given. */
export function widenFloat16(halves, out = new Uint32Array(halves.length)) {
  const table = halfToFloatTable();
  for (let i = 0; i < halves.length; ++i) out[i] = table[halves[i]];
  return out;
}

/**
 * float32 values -> float16 bit patterns, rounded to nearest even (as numpy's astype); `out` (a Uint16Array of
 * the same length) is reused if given. Returns the index of the first finite value beyond float16's range
 * (which would become inf) as `overflow`, or -1.
 */
export function narrowToFloat16(floats, out = new Uint16Array(floats.length)) {
  const bits = new Uint32Array(floats.buffer, floats.byteOffset, floats.length);
  let overflow = -1;
  for (let i = 0; i < bits.length; ++i) {
    const x = bits[i];
    const sign = (x >>> 16) & 0x8000;
    const exponent = (x >>> 23) & 0xff;
    const mantissa = x & 0x7fffff;
    let h;
    if (exponent === 0xff) {
      h = sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0); // inf; NaN stays a (quiet) NaN
    } else if (exponent > 142) {
      h = sign | 0x7c00; // beyond 65520: inf (reported)
      if (overflow < 0) overflow = i;
    } else if (exponent >= 113) {
      // Normal half: rebias 127 -> 15 and round the 13 dropped bits to nearest even; a carry may ripple into
      // the exponent, which is what rounding up to the next binade (or to inf) means.
      const base = ((exponent - 112) << 10) | (mantissa >>> 13);
      const rest = mantissa & 0x1fff;
      h = base + (rest > 0x1000 || (rest === 0x1000 && (base & 1)) ? 1 : 0);
      if (h >= 0x7c00 && overflow < 0) overflow = i;
      h |= sign;
    } else if (exponent >= 102) {
      // Subnormal half: the value in units of 2^-24, rounded to nearest even.
      const full = mantissa | 0x800000;
      const shift = 126 - exponent;
      const base = full >>> shift;
      const rest = full & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      h = sign | (base + (rest > half || (rest === half && (base & 1)) ? 1 : 0));
    } else {
      h = sign; // below half the smallest subnormal: +-0
    }
    out[i] = h;
  }
  return { halves: out, overflow };
}

/** The float16 values in bytes[start, start + nbytes) as a Uint16Array (copied when not 2-byte aligned). */
function halvesAt(bytes, start, nbytes) {
  const offset = bytes.byteOffset + start;
  if (offset % 2 === 0) return new Uint16Array(bytes.buffer, offset, nbytes / 2);
  return new Uint16Array(bytes.slice(start, start + nbytes).buffer);
}

/**
 * Downloads (through `fetchFile(url, {sha256, label})`, which returns verified bytes) every shard of
 * `cache` and uploads its tensors to the GPU. Returns the tensors in the order of metadata.param_names,
 * detached from any tvmjs scope (the caller disposes them).
 */
export async function loadTensorCache(handle, cache, cacheUrl, fetchFile, dtypesOfLibrary = undefined) {
  const { tvm } = handle;
  const dtypes = libraryDtypes(cache, cacheUrl, dtypesOfLibrary);
  const byName = new Map();
  // One scratch buffer for every converted tensor, grown to the largest: writeBuffer copies it at once.
  let scratch = new ArrayBuffer(0);
  const scratchOf = (bytes) => (scratch.byteLength < bytes ? (scratch = new ArrayBuffer(bytes)) : scratch);
  try {
    for (const shard of cache.records) {
      const url = new URL(shard.dataPath, cacheUrl).href;
      const bytes = await fetchFile(url, { sha256: shard.sha256, bytes: shard.nbytes });
      await verify(bytes, shard.sha256, url);
      for (const rec of shard.records) {
        if (rec.format !== "raw") throw new FormatError(`${url}: ${rec.name} has encoding ${rec.format}, expected raw`);
        const dtype = dtypes.get(rec.name);
        if (dtype === undefined) continue; // not a parameter of the library's function
        const conversion = `${rec.dtype}->${dtype}`;
        if (rec.dtype !== dtype && !CONVERSIONS.has(conversion)) {
          throw new FormatError(`${url}: tensor ${rec.name} is stored as ${rec.dtype}, but the library takes ${dtype}; rebuild the model`);
        }
        const count = elements(rec.shape);
        if (rec.nbytes !== count * dtypeBytes(rec.dtype) || rec.byteOffset + rec.nbytes > bytes.length) {
          throw new FormatError(`${url}: tensor ${rec.name} (${rec.dtype} ${JSON.stringify(rec.shape)}) does not fit ` +
            `its ${rec.nbytes} bytes at offset ${rec.byteOffset}; rebuild the model`);
        }
        const tensor = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.empty(rec.shape, dtype, handle.gpu)));
        byName.set(rec.name, tensor);
        if (conversion === "float16->float32") {
          const wide = widenFloat16(halvesAt(bytes, rec.byteOffset, rec.nbytes), new Uint32Array(scratchOf(count * 4), 0, count));
          tensor.copyFromRawBytes(new Uint8Array(wide.buffer, 0, count * 4));
        } else if (conversion === "float32->float16") {
          const floats = new Float32Array(bytes.slice(rec.byteOffset, rec.byteOffset + rec.nbytes).buffer);
          const { halves, overflow } = narrowToFloat16(floats, new Uint16Array(scratchOf(count * 2), 0, count));
          if (overflow >= 0) {
            throw new FormatError(`${url}: tensor ${rec.name} holds ${floats[overflow]}, beyond float16's range: this ` +
              "model needs float32 compute (load it with compute float32)");
          }
          tensor.copyFromRawBytes(new Uint8Array(halves.buffer, 0, count * 2));
        } else {
          tensor.copyFromRawBytes(bytes.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes));
        }
      }
    }
    const names = cache.metadata.param_names;
    const missing = names.filter((n) => !byName.has(n));
    if (missing.length) throw new FormatError(`${cacheUrl}: no tensor named ${missing[0]} (${missing.length} missing)`);
    return names.map((n) => byName.get(n));
  } catch (err) {
    for (const t of byName.values()) t.dispose();
    throw err;
  }
}

// Weights: a tvmjs tensor cache (tensor-cache.json + shards, written by stages/dump_params.py) onto the GPU.
// Each shard is verified against the sha256 in the cache file before a byte of it is used.
//
// Shards store float32 parameters as float16 by default (half the download) while the library computes in
// float32: each record keeps its stored dtype, metadata.param_dtypes names the dtype the library takes, and a
// float16 record is widened on the CPU, one tensor at a time, into a float32 GPU tensor. Widening is exact,
// so the GPU gets the same values as the CPU pipeline (stages/lib/tensor_cache.py).

import { FormatError } from "./errors.js";
import { verify } from "./integrity.js";

export const CACHE_FORMAT = "websd-tensor-cache";
export const CACHE_VERSION = 1;

// float32 -> 4, float16 -> 2, int8 -> 1: TVM's dtype names end in their width in bits.
const dtypeBytes = (dtype) => Number(/\d+$/.exec(dtype)?.[0] ?? NaN) / 8;
const elements = (shape) => shape.reduce((n, d) => n * d, 1);
// (stored -> taken by the library) conversions a loader may make; any other mismatch is a broken cache.
const WIDENINGS = new Set(["float16->float32"]);

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

/** {name -> dtype the library takes} for every parameter of `cache` (metadata.param_dtypes). */
export function libraryDtypes(cache, url) {
  const { param_names: names, param_dtypes: dtypes } = cache.metadata;
  if (!Array.isArray(names) || !Array.isArray(dtypes) || dtypes.length !== names.length) {
    throw new FormatError(`${url}: the tensor cache does not say which dtype the library takes for each parameter ` +
      "(metadata.param_dtypes); rebuild the model");
  }
  return new Map(names.map((n, i) => [n, dtypes[i]]));
}

/** Bytes each parameter takes on the GPU: in the dtype the library takes, which may be wider than the stored one. */
export function gpuTensorBytes(cache, url) {
  const dtypes = libraryDtypes(cache, url);
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
export async function loadTensorCache(handle, cache, cacheUrl, fetchFile) {
  const { tvm } = handle;
  const dtypes = libraryDtypes(cache, cacheUrl);
  const byName = new Map();
  // One scratch buffer for every widened tensor, grown to the largest: writeBuffer copies it at once.
  let scratch = new Uint32Array(0);
  try {
    for (const shard of cache.records) {
      const url = new URL(shard.dataPath, cacheUrl).href;
      const bytes = await fetchFile(url, { sha256: shard.sha256, bytes: shard.nbytes });
      await verify(bytes, shard.sha256, url);
      for (const rec of shard.records) {
        if (rec.format !== "raw") throw new FormatError(`${url}: ${rec.name} has encoding ${rec.format}, expected raw`);
        const dtype = dtypes.get(rec.name);
        if (dtype === undefined) continue; // not a parameter of the library's function
        const widen = rec.dtype !== dtype;
        if (widen && !WIDENINGS.has(`${rec.dtype}->${dtype}`)) {
          throw new FormatError(`${url}: tensor ${rec.name} is stored as ${rec.dtype}, but the library takes ${dtype}; rebuild the model`);
        }
        const count = elements(rec.shape);
        if (rec.nbytes !== count * dtypeBytes(rec.dtype) || rec.byteOffset + rec.nbytes > bytes.length) {
          throw new FormatError(`${url}: tensor ${rec.name} (${rec.dtype} ${JSON.stringify(rec.shape)}) does not fit ` +
            `its ${rec.nbytes} bytes at offset ${rec.byteOffset}; rebuild the model`);
        }
        const tensor = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.empty(rec.shape, dtype, handle.gpu)));
        byName.set(rec.name, tensor);
        if (widen) {
          if (scratch.length < count) scratch = new Uint32Array(count);
          const wide = widenFloat16(halvesAt(bytes, rec.byteOffset, rec.nbytes), scratch.subarray(0, count));
          tensor.copyFromRawBytes(new Uint8Array(wide.buffer, 0, count * 4));
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

// Weights: a tvmjs tensor cache (tensor-cache.json + shards, written by stages/dump_params.py) onto the GPU.
// Each shard is verified against the sha256 in the cache file before a byte of it is used.

import { FormatError } from "./errors.js";
import { verify } from "./integrity.js";

export const CACHE_FORMAT = "websd-tensor-cache";
export const CACHE_VERSION = 1;

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
 * Downloads (through `fetchFile(url, {sha256, label})`, which returns verified bytes) every shard of
 * `cache` and uploads its tensors to the GPU. Returns the tensors in the order of metadata.param_names,
 * detached from any tvmjs scope (the caller disposes them).
 */
export async function loadTensorCache(handle, cache, cacheUrl, fetchFile) {
  const { tvm } = handle;
  const byName = new Map();
  try {
    for (const shard of cache.records) {
      const url = new URL(shard.dataPath, cacheUrl).href;
      const bytes = await fetchFile(url, { sha256: shard.sha256, bytes: shard.nbytes });
      await verify(bytes, shard.sha256, url);
      for (const rec of shard.records) {
        if (rec.format !== "raw") throw new FormatError(`${url}: ${rec.name} has encoding ${rec.format}, expected raw`);
        const tensor = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.empty(rec.shape, rec.dtype, handle.gpu)));
        tensor.copyFromRawBytes(bytes.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes));
        byName.set(rec.name, tensor);
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

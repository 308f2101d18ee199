// The page's file store: model files downloaded once, kept in the browser's Cache API and checked against
// their sha256 every time they are used (after web-llm's cache_util.ts: one named cache per kind of file).
//
//   const store = new AssetStore({ onProgress });
//   await store.ensure(file);           // network -> verify -> cache, unless a complete copy is cached
//   const bytes = await store.read(file); // cache -> verify; a corrupt or truncated copy is fetched again
//
// `file` is {url, sha256, bytes, kind} as web/runtime/load.js modelFiles() lists them. No DOM: it runs in the
// page's worker (downloads, reads) and on the page (usage, clear). Nothing but the given URLs is fetched.
// Where the Cache API is missing (plain http on another host) or full, files are kept in memory for the
// session instead and `store.persistent` says so.

import { FetchError, IntegrityError, QuotaError } from "../runtime/errors.js";
import { sha256Hex } from "../runtime/integrity.js";

// Cache names carry a version: a change to how entries are stored renames them, and clear() drops every
// name starting with PREFIX (old versions included).
const PREFIX = "websd-";
export const CACHE_NAMES = Object.freeze({
  library: "websd-library-v1",
  weights: "websd-weights-v1",
  "weights-index": "websd-weights-v1",
  tokenizer: "websd-config-v1",
  scheduler: "websd-config-v1",
  manifest: "websd-config-v1",
});
const SHA_HEADER = "x-websd-sha256";
const BYTES_HEADER = "x-websd-bytes";

/** The last path component, for messages ("unet/params.v1/params_shard_3.bin" reads better than a URL). */
export function fileLabel(url, base) {
  const u = new URL(url);
  if (base) {
    const dir = new URL(".", base).href;
    if (u.href.startsWith(dir)) return decodeURIComponent(u.href.slice(dir.length));
  }
  return decodeURIComponent(u.pathname.split("/").pop());
}

function isQuotaError(err) {
  return err?.name === "QuotaExceededError" || /quota/i.test(err?.message ?? "");
}

export class AssetStore {
  /**
   * onProgress({url, loaded, bytes, source: "network"}) while a file downloads.
   * label(url) names a file in error messages.
   */
  constructor({ onProgress = () => {}, label = (url) => fileLabel(url), caches = globalThis.caches, fetch = globalThis.fetch } = {}) {
    this.onProgress = onProgress;
    this.label = label;
    this.caches = caches;
    this.fetch = fetch.bind(globalThis);
    this.persistent = Boolean(caches);
    this.memory = new Map(); // url -> bytes, when the Cache API is missing or refused to store
    this.stats = { network: [], cached: [] }; // urls, in order (the dev panel and tests read them)
  }

  async _open(kind) {
    return this.persistent ? this.caches.open(CACHE_NAMES[kind] ?? CACHE_NAMES.weights) : null;
  }

  /** True if a copy with the expected hash and length is stored (its bytes are checked later, by read()). */
  async has(file) {
    if (this.memory.has(file.url)) return true;
    const cache = await this._open(file.kind);
    const hit = await cache?.match(file.url);
    return Boolean(hit && hit.headers.get(SHA_HEADER) === file.sha256 && Number(hit.headers.get(BYTES_HEADER)) === file.bytes);
  }

  /** Downloads `file` unless has(file); returns "cached" or "network". */
  async ensure(file, signal) {
    if (await this.has(file)) {
      this.stats.cached.push(file.url);
      return "cached";
    }
    await this.download(file, signal);
    return "network";
  }

  /** The stored bytes of `file` as they are (unchecked), or null. */
  async stored(file) {
    const bytes = this.memory.get(file.url);
    if (bytes) return bytes;
    const cache = await this._open(file.kind);
    const hit = await cache?.match(file.url);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
  }

  /** The verified bytes of `file`: from the cache when the stored copy is intact, else from the network. */
  async read(file, signal) {
    const bytes = await this.stored(file);
    if (bytes && (!file.sha256 || (bytes.length === file.bytes && (await sha256Hex(bytes)) === file.sha256))) {
      // Big memory copies are read once, by the loader, and then live on the GPU.
      if (file.kind === "weights" || file.kind === "library") this.memory.delete(file.url);
      return bytes;
    }
    // Missing, truncated or corrupt: never used; the network copy replaces it.
    return this.download(file, signal);
  }

  /** Network -> verified bytes -> cache. Throws FetchError / IntegrityError naming the file. */
  async download(file, signal) {
    const name = this.label(file.url);
    let response;
    try {
      // no-store: the Cache API copy is the one kept; the HTTP cache would only hold a second one.
      response = await this.fetch(file.url, { cache: "no-store", signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      if (await this._withoutCORS(file.url, signal)) {
        const host = new URL(file.url).origin;
        throw new FetchError(`Could not download ${name}: its host ${host} answered but without the CORS header ` +
          `(Access-Control-Allow-Origin) that lets this site read it. The site's owner must set that header on ${host} ` +
          "(README: Publish your own).", { url: file.url });
      }
      throw new FetchError(`Could not download ${name}: the network request failed (${err.message}). Check the connection and retry.`, { url: file.url });
    }
    if (!response.ok) {
      throw new FetchError(`Could not download ${name}: the server answered ${response.status} ${response.statusText}`.trim() + ".", { url: file.url });
    }
    const bytes = await this._readBody(response, file, name);
    this.stats.network.push(file.url);
    if (file.sha256) {
      const actual = await sha256Hex(bytes);
      if (actual !== file.sha256) {
        throw new IntegrityError(`${name} arrived damaged or out of date (${bytes.length} bytes, sha256 ${actual.slice(0, 12)}…, ` +
          `expected ${file.bytes} bytes, ${file.sha256.slice(0, 12)}…); retry to download it again.`, { url: file.url });
      }
    }
    await this._store(file, bytes);
    return bytes;
  }

  /** Whether a failed fetch of a cross-origin `url` is the host withholding CORS: it answers a no-cors request
   * (an opaque response the page cannot read) though the CORS request failed. */
  async _withoutCORS(url, signal) {
    const here = globalThis.location?.origin;
    if (!here || new URL(url).origin === here) return false;
    try {
      await this.fetch(url, { mode: "no-cors", cache: "no-store", signal, method: "HEAD" });
      return true;
    } catch {
      return false;
    }
  }

  async _readBody(response, file, name) {
    const expected = file.bytes ?? Number(response.headers.get("content-length") ?? 0);
    if (!response.body) return new Uint8Array(await response.arrayBuffer());
    const reader = response.body.getReader();
    let out = new Uint8Array(expected || 1 << 16);
    let loaded = 0;
    let lastReport = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (loaded + value.length > out.length) {
          const grown = new Uint8Array(Math.max(out.length * 2, loaded + value.length));
          grown.set(out.subarray(0, loaded));
          out = grown;
        }
        out.set(value, loaded);
        loaded += value.length;
        const now = performance.now();
        if (now - lastReport > 100) {
          lastReport = now;
          this.onProgress({ url: file.url, loaded, bytes: expected });
        }
      }
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new FetchError(`Could not download ${name}: the connection broke after ${loaded} bytes (${err.message}). Retry to continue.`, { url: file.url });
    }
    this.onProgress({ url: file.url, loaded, bytes: expected });
    return loaded === out.length ? out : out.slice(0, loaded);
  }

  async _store(file, bytes) {
    if (!this.persistent) {
      this.memory.set(file.url, bytes);
      return;
    }
    const headers = { "content-type": "application/octet-stream", [SHA_HEADER]: file.sha256 ?? "", [BYTES_HEADER]: String(bytes.length) };
    try {
      const cache = await this._open(file.kind);
      await cache.put(file.url, new Response(bytes, { headers }));
    } catch (err) {
      if (!isQuotaError(err)) throw err;
      // Full: keep this session going from memory; the next visit downloads again.
      this.persistent = false;
      this.quotaError = new QuotaError("The browser has no room left to keep the model, so it will be downloaded again next " +
        "time. Free disk space or allow this site more storage to keep it.");
      this.memory.set(file.url, bytes);
    }
  }
}

/** {files, bytes} stored by this site's caches (every version). */
export async function cacheUsage(caches = globalThis.caches) {
  if (!caches) return { files: 0, bytes: 0 };
  let files = 0, bytes = 0;
  for (const name of await caches.keys()) {
    if (!name.startsWith(PREFIX)) continue;
    const cache = await caches.open(name);
    for (const request of await cache.keys()) {
      const hit = await cache.match(request);
      files += 1;
      bytes += Number(hit?.headers.get(BYTES_HEADER) ?? 0);
    }
  }
  return { files, bytes };
}

/** Deletes every cache of this site; returns how many were deleted. */
export async function clearCaches(caches = globalThis.caches) {
  if (!caches) return 0;
  const names = (await caches.keys()).filter((n) => n.startsWith(PREFIX));
  await Promise.all(names.map((n) => caches.delete(n)));
  return names.length;
}

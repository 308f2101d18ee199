// SHA-256 of downloaded bytes, checked against the manifest (tvmjs' own md5 is not checked by its loader,
// and WebCrypto cannot compute MD5). WebCrypto exists in browsers (secure contexts) and Node >= 19.

import { IntegrityError } from "./errors.js";

export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Throws IntegrityError unless `bytes` hash to `expected` (hex). */
export async function verify(bytes, expected, url) {
  const actual = await sha256Hex(bytes);
  if (actual !== expected) {
    throw new IntegrityError(
      `${url} is corrupt or out of date (sha256 ${actual.slice(0, 12)}..., expected ${expected.slice(0, 12)}...); ` +
        `it will be downloaded again on retry`,
      { url },
    );
  }
}

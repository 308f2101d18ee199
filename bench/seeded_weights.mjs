// Seeded checkpoint weights, the same bit for bit as bench/seeded_weights.py (which says how they are made):
// the benchmark makes a model's checkpoint tensors with them, the library's transform turns them into its
// weights on the GPU, and PyTorch loads the very same tensors on the same GPU.

import { prepareParams, toGPU } from "../web/runtime/tvm.js";

const NORM_WEIGHT = /norm.*\.weight$/;

export function nameSeed(name) {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(name)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

/** Float32Array of the weight `name` with `shape`. */
export function seededTensor(name, shape) {
  const count = shape.reduce((a, b) => a * b, 1);
  const seed = nameSeed(name);
  const scale = shape.length >= 2 ? 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)) : 0.1;
  const offset = shape.length < 2 && NORM_WEIGHT.test(name) ? 1 : 0;
  const out = new Float32Array(count);
  for (let i = 0; i < count; ++i) {
    let x = (Math.imul(i, 0x9e3779b9) + seed) >>> 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d) >>> 0;
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b) >>> 0;
    x ^= x >>> 16;
    const unit = (x >>> 8) / 2 ** 23 - 1;
    out[i] = offset + unit * scale;
  }
  return out;
}

/**
 * loadModel's `makeParams` (web/runtime/load.js): a submodule's checkpoint tensors (the weights index's
 * metadata.sources, in diffusers' layout) seeded here and uploaded, then turned into the weights the library
 * takes by its `<function>_transform_params` on the GPU (the build's own parameter transform; in a float16
 * library it also narrows them).
 */
export async function seededParams(handle, cache, cacheUrl, dtypes, { vm, transform }) {
  const { sources } = cache.metadata;
  if (!Array.isArray(sources) || !transform) {
    throw new Error(`${cacheUrl}: no checkpoint sources or no library transform to make the weights from; rebuild the model`);
  }
  const { tvm } = handle;
  const tensors = sources.map(({ name, shape, dtype }) => {
    if (dtype !== "float32") throw new Error(`${cacheUrl}: seeded weights are float32, ${name} is ${dtype}`);
    return tvm.withNewScope(() => tvm.detachFromCurrentScope(toGPU(handle, seededTensor(name, shape), shape)));
  });
  const made = prepareParams(handle, vm, transform, tensors);
  if (made.length !== dtypes.length || made.some((t, i) => t.dtype !== dtypes[i])) {
    for (const t of made) t.dispose();
    throw new Error(`${cacheUrl}: ${transform} made ${made.length} tensors, not the ${dtypes.length} the library takes`);
  }
  return made;
}

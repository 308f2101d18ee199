// Helper of tests/python/test_seeded_weights.py: loads a built variant as the benchmark does with seeded
// weights (bench/seeded_weights.mjs: checkpoint tensors made in JS, the library's transform on WebGPU) and
// writes what the transform made, per submodule, before any load-time `_prepare`.
//
//   node seeded_params.mjs MODEL.json OUT_DIR [compute]
//
// OUT_DIR/<sub>.bin: the tensors' raw bytes one after another; prints {sub: [{shape, dtype}]} as one JSON line.

import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { create, globals } from "webgpu";

import { seededParams } from "../../../bench/seeded_weights.mjs";
import { loadModel } from "../../../web/runtime/load.js";
import { readTensor } from "../../../web/runtime/tvm.js";

async function main() {
  const [model, out, compute = "float32"] = process.argv.slice(2);
  Object.assign(globalThis, globals);
  const gpu = create([]);
  const fetchFile = async (url) => new Uint8Array(await readFile(fileURLToPath(url)));
  const made = {};
  const makeParams = async (handle, cache, cacheUrl, dtypes, library) => {
    const tensors = await seededParams(handle, cache, cacheUrl, dtypes, library);
    const arrays = [];
    for (const t of tensors) arrays.push(await readTensor(handle, t));
    await writeFile(join(out, `${cache.metadata.submodule}.bin`),
                    Buffer.concat(arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
    made[cache.metadata.submodule] = tensors.map((t) => ({ shape: Array.from(t.shape), dtype: t.dtype }));
    return tensors;
  };
  const loaded = await loadModel({ manifestUrl: pathToFileURL(resolve(model)).href, gpu, fetchFile, makeParams, compute,
                                   logger: () => {} });
  await loaded.handle.gpu.sync();  // exiting with GPU work in flight crashes Dawn
  loaded.dispose();
  process.stdout.write(`${JSON.stringify(made)}\n`);
  void gpu;
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(`error: ${err?.name ?? "Error"}: ${err?.message ?? err}\n${err?.stack ?? ""}`);
  process.exit(1);
});

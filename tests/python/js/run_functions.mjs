// Helper of tests/python/test_webgpu.py: loads a built variant with the page's loader (web/runtime/load.js,
// files read from disk as web/node/generate.mjs reads them) and calls compiled functions on WebGPU (Dawn).
//
//   node run_functions.mjs SPEC.json
//
// SPEC: { "model": "<variant>/model.json", "compute": "auto" (default) | "float32" | "float16",
//         "calls": [{ "sub": "unet", "fn": "unet", "out": "out.bin",
//                     "inputs": [{ "file": "x.bin", "dtype": "float32", "shape": [1, 4, 16, 16] }, ...] }, ...] }
// Each call is `model.vms[sub].fn(fn)(...inputs, ...model.params[sub])`, the inputs raw little-endian files;
// the output's raw bytes go to `out` (with `index`, that element of a function's tuple of outputs). Prints one JSON line on stdout:
//   { "adapter": "...", "compute": {sub: "float32" | "float16"}, "outputs": [{ "shape": [...], "dtype": "float32" }, ...],
//     "gpuErrors": [...] }
// gpuErrors: uncaptured WebGPU errors (handle.gpuErrors) and those of an error scope around all the calls.
// A failure prints `error: <name>: <message>` on stderr and exits 1.

import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { create, globals } from "webgpu";

import { loadModel } from "../../../web/runtime/load.js";
import { readTensor, toGPU } from "../../../web/runtime/tvm.js";

const TYPED = { float32: Float32Array, int32: Int32Array, uint32: Uint32Array };

async function readInput({ file, dtype, shape }) {
  const Type = TYPED[dtype];
  if (!Type) throw new Error(`unsupported input dtype ${dtype}`);
  const bytes = await readFile(file);
  // A copy: the typed array must start at an aligned offset of its own buffer.
  return { array: new Type(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), shape };
}

async function main() {
  const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
  Object.assign(globalThis, globals);
  // Kept referenced until the end: Dawn's GPU object must outlive its devices.
  const gpu = create([]);
  const fetchFile = async (url) => new Uint8Array(await readFile(fileURLToPath(url)));
  const model = await loadModel({ manifestUrl: pathToFileURL(resolve(spec.model)).href, gpu, fetchFile,
                                  compute: spec.compute ?? "auto", logger: () => {} });
  const { handle } = model;
  const { tvm } = handle;
  const info = handle.adapter.info ?? {};
  handle.device.pushErrorScope("validation");
  handle.device.pushErrorScope("out-of-memory");
  const outputs = [];
  for (const call of spec.calls) {
    const inputs = await Promise.all(call.inputs.map(readInput));
    tvm.beginScope();
    try {
      const args = inputs.map(({ array, shape }) => toGPU(handle, array, shape));
      const result = model.vms[call.sub].fn(call.fn)(...args, ...(model.params[call.sub] ?? []));
      const out = call.index === undefined ? result : result.get(call.index);
      const values = await readTensor(handle, out);
      await writeFile(call.out, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      outputs.push({ shape: Array.from(out.shape), dtype: out.dtype });
    } finally {
      tvm.endScope();
    }
  }
  await handle.gpu.sync();
  const scoped = [await handle.device.popErrorScope(), await handle.device.popErrorScope()]
    .filter(Boolean).map((e) => `error scope: ${e.message}`);
  const gpuErrors = [...handle.gpuErrors, ...scoped];
  const adapter = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  const compute = Object.fromEntries(Object.entries(model.libraries).map(([sub, lib]) => [sub, lib.compute]));
  process.stdout.write(`${JSON.stringify({ adapter, compute, outputs, gpuErrors })}\n`);
  model.dispose();
  void gpu;
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(`error: ${err?.name ?? "Error"}: ${err?.message ?? err}\n${err?.stack ?? ""}`);
  process.exit(1);
});

// Helper of tests/python/webgpu_kernels.py: calls single kernels (PrimFuncs) of a linked .wasm on WebGPU (Dawn).
//
//   node run_kernels.mjs SPEC.json
//
// SPEC: { "wasm": "kernels.wasm", "prefix": "<system_lib_prefix>", "features": ["shader-f16"] (optional),
//         "calls": [{ "fn": "name", "inputs": [{ "file": "q.bin", "dtype": "float32", "shape": [...] }, ...],
//                     "output": { "file": "out.bin", "dtype": "float32", "shape": [...] } }, ...],
//         "replacements": { "<kernel>": { "wgsl": "<WGSL>", "workgroups_x": 1 } } (optional: tvm.js replaceKernels),
//         "dawn_toggles": ["allow_unsafe_apis", ...] (optional: bench/subgroup_matrix_attention_check.py on a GPU) }
// Each call is `fn(...inputs, output)` (TVM's destination-passing convention for a kernel); the output tensor is
// first filled with NaN bits so that a value the kernel never wrote cannot pass. Prints one JSON line:
//   { "adapter": "...", "gpuErrors": [...], "replaced": [kernels created from "replacements"] }; a failure prints `error: <message>` on stderr and exits 1.

import { readFile, writeFile } from "node:fs/promises";

import { create, globals } from "webgpu";

import { deviceLimits, instantiateLibrary, readTensor, replaceKernels, toGPU } from "../../../web/runtime/tvm.js";

const TYPED = { float32: Float32Array, float16: Uint16Array };
const NAN_BITS = { float32: [Uint32Array, 0x7fc00000], float16: [Uint16Array, 0x7e00] };

async function readInput({ file, dtype, shape }) {
  const bytes = await readFile(file);
  return { array: new TYPED[dtype](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
           dtype, shape };
}

async function main() {
  const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
  Object.assign(globalThis, globals);
  // One flag for all toggles: Dawn keeps only the last of repeated enable-dawn-features flags.
  const toggles = spec.dawn_toggles ?? [];
  const gpu = create(toggles.length ? [`enable-dawn-features=${toggles.join(",")}`] : []);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const features = (spec.features ?? []).filter((f) => adapter.features.has(f));
  if (features.length !== (spec.features ?? []).length) throw new Error(`adapter lacks ${spec.features}`);
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits: deviceLimits(adapter) });
  const handle = await instantiateLibrary(await readFile(spec.wasm), device, { logger: () => {} });
  replaceKernels(handle, spec.replacements ?? {});
  const { tvm } = handle;
  const library = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.getGlobalFunc("ffi.SystemLib")(spec.prefix)));
  device.pushErrorScope("validation");
  for (const call of spec.calls) {
    const inputs = await Promise.all(call.inputs.map(readInput));
    tvm.beginScope();
    try {
      const args = inputs.map(({ array, shape, dtype }) => toGPU(handle, array, shape, dtype));
      const { dtype, shape } = call.output;
      const [Bits, nan] = NAN_BITS[dtype];
      const out = toGPU(handle, new Bits(shape.reduce((a, b) => a * b, 1)).fill(nan), shape, dtype);
      library.getFunction(call.fn)(...args, out);
      const values = await readTensor(handle, out);
      await writeFile(call.output.file, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    } finally {
      tvm.endScope();
    }
  }
  await handle.gpu.sync();
  const scoped = await device.popErrorScope();
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  process.stdout.write(`${JSON.stringify({ adapter: name, gpuErrors: [...handle.gpuErrors, ...(scoped ? [scoped.message] : [])],
    replaced: [...handle.kernelsReplaced].sort() })}\n`);
  library.dispose();
  tvm.dispose();
  void gpu;
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(`error: ${err?.message ?? err}\n${err?.stack ?? ""}`);
  process.exit(1);
});

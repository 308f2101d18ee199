// Helper of tests/python/webgpu_kernels.py: calls single kernels (PrimFuncs) of a linked .wasm on WebGPU (Dawn).
//
//   node run_kernels.mjs SPEC.json
//
// SPEC: { "wasm": "kernels.wasm", "prefix": "<system_lib_prefix>", "features": ["shader-f16"] (optional),
//         "calls": [{ "fn": "name", "inputs": [{ "file": "q.bin", "dtype": "float32", "shape": [...] }, ...],
//                     "output": { "file": "out.bin", "dtype": "float32", "shape": [...] },
//                     "repeats": n (optional: then timed over n calls, GPU time from timestamps) }, ...],
//         an input may be { "random": seed, "scale": s, "dtype": "float16", "shape": [...], "save": "file" (optional) }
//         instead: uniform values made here (bench/subgroup_matrix_gemm_check.py: inputs too large to carry),
//         "replacements": { "<kernel>": { "wgsl": "<WGSL>", "workgroups_x": 1 } } (optional: tvm.js replaceKernels),
//         "dawn_toggles": ["allow_unsafe_apis", ...] (optional: bench/subgroup_matrix_attention_check.py on a GPU) }
// Each call is `fn(...inputs, output)` (TVM's destination-passing convention for a kernel); the output tensor is
// first filled with NaN bits so that a value the kernel never wrote cannot pass. Prints one JSON line:
//   { "adapter": "...", "gpuErrors": [...], "replaced": [kernels created from "replacements"],
//     "times_ms": { fn: ms per call } (for calls with repeats) }; a failure prints `error: <message>` on stderr and exits 1.

import { readFile, writeFile } from "node:fs/promises";

import { create, globals } from "webgpu";

import { deviceLimits, instantiateLibrary, readTensor, replaceKernels, toGPU } from "../../../web/runtime/tvm.js";

const TYPED = { float32: Float32Array, float16: Uint16Array };
const NAN_BITS = { float32: [Uint32Array, 0x7fc00000], float16: [Uint16Array, 0x7e00] };

// Deterministic uniform values in [-scale, scale) as float16 bits (xorshift32), for inputs too large to carry.
function randomHalf(count, seed, scale) {
  const out = new Uint16Array(count);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    f32[0] = ((x / 4294967296) * 2 - 1) * scale;
    const b = u32[0]; // round to nearest, normal range only (|values| <= scale, small enough)
    const exp = ((b >>> 23) & 0xff) - 112;
    out[i] = exp <= 0 ? (b >>> 16) & 0x8000 : ((b >>> 16) & 0x8000) | ((exp << 10) + ((b >>> 13) & 0x3ff) + ((b >>> 12) & 1));
  }
  return out;
}

async function readInput({ file, dtype, shape, random, scale, save }) {
  if (random !== undefined) {
    if (dtype !== "float16") throw new Error("random inputs are float16");
    const array = randomHalf(shape.reduce((a, b) => a * b, 1), random, scale ?? 1);
    if (save) await writeFile(save, new Uint8Array(array.buffer));
    return { array, dtype, shape };
  }
  const bytes = await readFile(file);
  return { array: new TYPED[dtype](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
           dtype, shape };
}

async function main() {
  const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
  Object.assign(globalThis, globals);
  // One flag for all toggles: Dawn keeps only the last of repeated enable-dawn-features flags.
  const toggles = spec.dawn_toggles ?? [];
  const timed = spec.calls.some((call) => call.repeats);
  const gpu = create([...(toggles.length ? [`enable-dawn-features=${toggles.join(",")}`] : []),
                      ...(timed ? ["disable-dawn-features=timestamp_quantization"] : [])]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const features = (spec.features ?? []).filter((f) => adapter.features.has(f));
  if (features.length !== (spec.features ?? []).length) throw new Error(`adapter lacks ${spec.features}`);
  if (timed && !adapter.features.has("timestamp-query")) throw new Error("timing needs the timestamp-query feature");
  const device = await adapter.requestDevice({ requiredFeatures: [...features, ...(timed ? ["timestamp-query"] : [])],
                                               requiredLimits: deviceLimits(adapter) });
  // GPU time per kernel from timestamps (the benchmark's profiler): the host's per-call cost (~0.4 ms in tvmjs)
  // would hide a kernel of 0.1 ms
  const profiler = timed ? (await import("../../../bench/kernel_profile.js")).installProfiler(device) : null;
  const handle = await instantiateLibrary(await readFile(spec.wasm), device, { logger: () => {} });
  replaceKernels(handle, spec.replacements ?? {});
  const { tvm } = handle;
  const library = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.getGlobalFunc("ffi.SystemLib")(spec.prefix)));
  device.pushErrorScope("validation");
  const times = {};
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
      if (call.repeats) {
        // timed: `repeats` calls back to back after as many warm-up calls, per call (host submission included)
        const fn = library.getFunction(call.fn);
        // warm up first: an idle GPU runs at a fraction of its clock until it has been busy
        for (let i = 0; i < 2 * call.repeats; i++) fn(...args, out);
        await handle.gpu.sync();
        profiler.start();
        for (let i = 0; i < call.repeats; i++) fn(...args, out);
        await handle.gpu.sync();
        const kernels = await profiler.stop();
        times[call.fn] = kernels.reduce((sum, k) => sum + k.ms, 0) / call.repeats;
      }
    } finally {
      tvm.endScope();
    }
  }
  await handle.gpu.sync();
  const scoped = await device.popErrorScope();
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  process.stdout.write(`${JSON.stringify({ adapter: name, gpuErrors: [...handle.gpuErrors, ...(scoped ? [scoped.message] : [])],
    replaced: [...handle.kernelsReplaced].sort(), ...(Object.keys(times).length ? { times_ms: times } : {}) })}\n`);
  library.dispose();
  tvm.dispose();
  void gpu;
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(`error: ${err?.message ?? err}\n${err?.stack ?? ""}`);
  process.exit(1);
});

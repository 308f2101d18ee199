// Benchmark: the whole text-to-image pipeline on WebGPU through Node + Dawn (the page's own runtime).
//
//   node bench/webgpu_sd.mjs --model artifacts/sd15-random/model.json [--steps 20] [--scheduler dpm]
//        [--random-weights] [--runs 2] [--json out.json] [--dawn-toggle allow_unsafe_apis ...]
//        [--compute auto|float32|float16]
//
// --compute picks the libraries as the page does (auto: float16 where the adapter has shader-f16). Dawn on
// NVIDIA exposes shader-f16 only with --dawn-toggle vulkan_enable_f16_on_nvidia (an unsafe toggle that
// browsers do not set): report such runs apart from the stock float32 ones.
//
// --random-weights fills every parameter on the GPU with seeded random values of the right shape
// (tensor-cache.json gives names and shapes) instead of reading shards: full-size weights cannot travel
// to the lent GPU machine, and the timings do not depend on the values. Prints text encoder, per-step UNet
// (median over steps and runs after the first run, which includes shader compilation), VAE and end to end.

import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath, pathToFileURL } from "node:url";

import { create, globals } from "webgpu";

import { installProfiler } from "./kernel_profile.js";
import { loadModel } from "../web/runtime/load.js";
import { libraryDtypes, narrowToFloat16 } from "../web/runtime/params.js";

const { values: opt } = parseArgs({
  options: {
    model: { type: "string" },
    steps: { type: "string", default: "20" },
    scheduler: { type: "string", default: "dpm" },
    runs: { type: "string", default: "2" },
    "random-weights": { type: "boolean", default: false },
    json: { type: "string" },
    "dawn-toggle": { type: "string", multiple: true, default: [] },
    profile: { type: "boolean", default: false },
    compute: { type: "string", default: "auto" },
  },
});

// Seeded values: N(0, 0.02) for matrices and convolutions, 1 for normalisation scales, 0 for other vectors;
// in the dtype the chosen library takes (float16 ones narrowed as params.js narrows float32 shards).
function randomParams(handle, cache, cacheUrl, dtypesOfLibrary) {
  let state = 12345;
  const uniform = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const tensors = [];
  const records = new Map(cache.records.flatMap((shard) => shard.records.map((r) => [r.name, r])));
  const dtypes = libraryDtypes(cache, cacheUrl, dtypesOfLibrary);
  const { tvm } = handle;
  for (const name of cache.metadata.param_names) {
    const rec = records.get(name);
    const dtype = dtypes.get(name);
    const count = rec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(count);
    if (rec.shape.length === 1) data.fill(/norm.*weight/.test(name) ? 1 : 0);
    else for (let i = 0; i < count; ++i) data[i] = (uniform() + uniform() + uniform() - 1.5) * 0.04;
    if (dtype !== "float32" && dtype !== "float16") throw new Error(`random weights: ${name} is ${dtype}`);
    const bytes = dtype === "float16" ? narrowToFloat16(data).halves : data;
    const tensor = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.empty(rec.shape, dtype, handle.gpu)));
    tensor.copyFromRawBytes(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    tensors.push(tensor);
  }
  return tensors;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main() {
  Object.assign(globalThis, globals);
  const dawn = opt["dawn-toggle"].map((t) => `enable-dawn-features=${t}`);
  if (opt.profile) dawn.push("disable-dawn-features=timestamp_quantization");
  const gpu = create(dawn);
  let profiler;
  const manifestUrl = pathToFileURL(resolve(opt.model)).href;
  const fetchFile = async (url) => new Uint8Array(await readFile(fileURLToPath(url)));
  const t0 = performance.now();
  const model = await loadModel({ manifestUrl, gpu, fetchFile, makeParams: opt["random-weights"] ? randomParams : undefined,
    compute: opt.compute, optionalFeatures: opt.profile ? ["timestamp-query"] : [],
    onDevice: (device) => { if (opt.profile) profiler = installProfiler(device); } });
  const loadMs = performance.now() - t0;
  const info = model.handle.adapter.info ?? {};
  const adapter = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  const compute = Object.fromEntries(Object.entries(model.libraries).map(([sub, lib]) => [sub, lib.compute]));
  console.log(`adapter: ${adapter}; load ${loadMs.toFixed(0)} ms; compute ${JSON.stringify(compute)}; ` +
              `dawn toggles ${JSON.stringify(opt["dawn-toggle"])}`);
  const runs = [];
  for (let r = 0; r < Number(opt.runs); ++r) {
    const res = await model.generate({ prompt: "a photograph of an astronaut riding a horse", seed: r,
                                       steps: Number(opt.steps), scheduler: opt.scheduler });
    const t = res.timings;
    console.log(`run ${r}: text encoder ${t.clip.toFixed(1)} ms, unet median ${median(t.steps).toFixed(1)} ms ` +
                `(${t.steps.length} steps), vae ${t.vae.toFixed(1)} ms, total ${t.total.toFixed(0)} ms`);
    runs.push(t);
  }
  const warm = runs.length > 1 ? runs.slice(1) : runs;
  const summary = {
    adapter,
    compute,
    dawn_toggles: opt["dawn-toggle"],
    image: model.manifest.image,
    steps: Number(opt.steps),
    scheduler: opt.scheduler,
    load_ms: loadMs,
    text_encoder_ms: median(warm.map((t) => t.clip)),
    unet_step_ms: median(warm.flatMap((t) => t.steps)),
    vae_ms: median(warm.map((t) => t.vae)),
    end_to_end_ms: median(warm.map((t) => t.total)),
    first_run_total_ms: runs[0].total,
    runs,
  };
  console.log(`summary: unet ${summary.unet_step_ms.toFixed(1)} ms/step, text ${summary.text_encoder_ms.toFixed(1)} ms, ` +
              `vae ${summary.vae_ms.toFixed(1)} ms, end to end ${summary.end_to_end_ms.toFixed(0)} ms`);
  if (profiler) {
    // One more generation of 2 steps, every kernel timed: the UNet's kernels appear twice per step.
    profiler.start();
    await model.generate({ prompt: "profile", seed: 0, steps: 2, scheduler: opt.scheduler });
    const kernels = await profiler.stop();
    const total = kernels.reduce((n, k) => n + k.ms, 0);
    console.log(`profile: ${kernels.reduce((n, k) => n + k.calls, 0)} dispatches, ${total.toFixed(1)} ms GPU time`);
    for (const k of kernels.slice(0, 40)) {
      console.log(`${k.ms.toFixed(2).padStart(9)} ms ${(100 * k.ms / total).toFixed(1).padStart(5)}% ${String(k.calls).padStart(4)}x  ${k.name}`);
    }
    summary.profile = kernels;
  }
  if (opt.json) await writeFile(opt.json, JSON.stringify(summary, null, 1));
  model.dispose();
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});

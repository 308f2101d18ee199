// Benchmark: the whole text-to-image pipeline on WebGPU through Node + Dawn (the page's own runtime).
//
//   node bench/webgpu_sd.mjs --model artifacts/sd15-random/model.json [--steps 20] [--scheduler dpm]
//        [--seeded-weights] [--check DIR] [--runs 2] [--json out.json] [--dawn-toggle allow_unsafe_apis ...]
//        [--compute auto|float32|float16|subgroup-matrix]
//
// --compute picks the libraries as the page does (auto: float16 where the adapter has shader-f16). Dawn on
// NVIDIA exposes shader-f16 only with --dawn-toggle vulkan_enable_f16_on_nvidia (an unsafe toggle that
// browsers do not set): report such runs apart from the stock float32 ones. subgroup-matrix adds the float16
// libraries' tensor-core kernels (Dawn: allow_unsafe_apis as well).
//
// --seeded-weights makes every checkpoint tensor from its name (bench/seeded_weights.mjs) instead of reading
// shards, and the library's own transform turns them into its weights on the GPU: full-size weights cannot
// travel to the lent GPU machine, and PyTorch makes the very same tensors there (bench/torch_reference.py).
// --check DIR writes what that comparison needs: one UNet call's inputs and output (unet-in<i>.f32,
// unet-<compute>.f32) and the first run's image (image-<compute>.png) with its settings (check-<compute>.json).
// Prints text encoder, per-step UNet (median over steps and runs after the first run, which includes shader
// compilation), VAE and end to end.

import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath, pathToFileURL } from "node:url";

import { create, globals } from "webgpu";

import { installProfiler } from "./kernel_profile.js";
import { seededParams } from "./seeded_weights.mjs";
import { loadModel } from "../web/runtime/load.js";
import { gaussianNoise } from "../web/runtime/noise.js";
import { encodePNG } from "../web/runtime/png.js";
import { readTensor, toGPU } from "../web/runtime/tvm.js";

const { values: opt } = parseArgs({
  options: {
    model: { type: "string" },
    steps: { type: "string", default: "20" },
    scheduler: { type: "string" },
    runs: { type: "string", default: "2" },
    "seeded-weights": { type: "boolean", default: false },
    check: { type: "string" },
    json: { type: "string" },
    "dawn-toggle": { type: "string", multiple: true, default: [] },
    profile: { type: "boolean", default: false },
    compute: { type: "string", default: "auto" },
  },
});

const PROMPT = "a photograph of an astronaut riding a horse";

/** One UNet call on fixed inputs (seeded noise; timestep 500, guidance 7.5, SDXL's time ids for the image
 * size), inputs and output written raw to `dir` for bench/torch_reference.py. */
async function checkUNet(model, dir) {
  const { handle, manifest, libraries } = model;
  const { inputs } = libraries.unet.functions.unet;
  const { width, height } = manifest.image;
  const fixed = { timestep: [500], guidance: [7.5], time_ids: [height, width, 0, 0, height, width, height, width, 0, 0, height, width] };
  const arrays = inputs.map(({ name, shape }, i) => Float32Array.from(fixed[name] ?? gaussianNoise(100 + i, shape)));
  for (const [i, a] of arrays.entries()) await writeFile(join(dir, `unet-in${i}.f32`), new Uint8Array(a.buffer));
  const { tvm } = handle;
  tvm.beginScope();
  try {
    const args = arrays.map((a, i) => toGPU(handle, a, inputs[i].shape));
    const out = await readTensor(handle, model.vms.unet.fn("unet")(...args, ...model.params.unet));
    await writeFile(join(dir, `unet-${checkName(libraries.unet)}.f32`), new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  } finally {
    tvm.endScope();
  }
}

// The name a run's check files carry: the UNet library's compute, or subgroup-matrix where its tensor-core
// kernels ran.
const checkName = (library) => (library.subgroupMatrix ? "subgroup-matrix" : library.compute);

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main() {
  Object.assign(globalThis, globals);
  // One flag for all toggles: Dawn keeps only the last of repeated enable-dawn-features flags.
  const dawn = opt["dawn-toggle"].length ? [`enable-dawn-features=${opt["dawn-toggle"].join(",")}`] : [];
  if (opt.profile) dawn.push("disable-dawn-features=timestamp_quantization");
  const gpu = create(dawn);
  let profiler;
  const manifestUrl = pathToFileURL(resolve(opt.model)).href;
  const fetchFile = async (url) => new Uint8Array(await readFile(fileURLToPath(url)));
  const t0 = performance.now();
  // Where load time goes: each progress event's time (weights per submodule, the libraries' pipelines).
  const loadPhases = [];
  const onProgress = (p) => loadPhases.push({ ms: Math.round(performance.now() - t0), ...p });
  const model = await loadModel({ manifestUrl, gpu, fetchFile, onProgress,
    makeParams: opt["seeded-weights"] ? seededParams : undefined,
    compute: opt.compute, optionalFeatures: opt.profile ? ["timestamp-query"] : [],
    onDevice: (device) => { if (opt.profile) profiler = installProfiler(device); } });
  const loadMs = performance.now() - t0;
  const info = model.handle.adapter.info ?? {};
  const adapter = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  const compute = Object.fromEntries(Object.entries(model.libraries).map(([sub, lib]) => [sub, checkName(lib)]));
  console.log(`load phases (ms from start): ${loadPhases.map((p) => `${p.phase}${p.submodule ? " " + p.submodule : ""}` +
    `${p.total ? ` ${p.done}/${p.total}` : ""} ${p.ms}`).join(", ")}`);
  console.log(`adapter: ${adapter}; load ${loadMs.toFixed(0)} ms; compute ${JSON.stringify(compute)}; ` +
              `dawn toggles ${JSON.stringify(opt["dawn-toggle"])}`);
  const scheduler = opt.scheduler ?? model.manifest.default_scheduler;
  const runs = [];
  for (let r = 0; r < Number(opt.runs); ++r) {
    const settings = { prompt: PROMPT, negative: "", seed: r, steps: Number(opt.steps), scheduler, guidance: 7.5 };
    const res = await model.generate(settings);
    if (opt.check && r === 0) {
      const suffix = checkName(model.libraries.unet);
      await writeFile(join(opt.check, `image-${suffix}.png`), await encodePNG(res.rgba, res.width, res.height));
      await writeFile(join(opt.check, `check-${suffix}.json`), JSON.stringify({ ...settings, compute }, null, 1));
    }
    const t = res.timings;
    console.log(`run ${r}: text encoder ${t.clip.toFixed(1)} ms, unet median ${median(t.steps).toFixed(1)} ms ` +
                `(${t.steps.length} steps), vae ${t.vae.toFixed(1)} ms, total ${t.total.toFixed(0)} ms`);
    runs.push(t);
  }
  if (opt.check) await checkUNet(model, opt.check);  // after the runs: the first one times the cold start
  const warm = runs.length > 1 ? runs.slice(1) : runs;
  const summary = {
    adapter,
    compute,
    dawn_toggles: opt["dawn-toggle"],
    image: model.manifest.image,
    steps: Number(opt.steps),
    scheduler,
    weights: opt["seeded-weights"] ? "seeded (bench/seeded_weights.mjs)" : "shards",
    load_ms: loadMs,
    load_phases: loadPhases,
    text_encoder_ms: median(warm.map((t) => t.clip)),
    unet_step_ms: median(warm.flatMap((t) => t.steps)),
    vae_ms: median(warm.map((t) => t.vae)),
    end_to_end_ms: median(warm.map((t) => t.total)),
    first_run_total_ms: runs[0].total,
    first_image_ms: runs[0].total,  // from load done to the first image: shader compilation included
    runs,
  };
  console.log(`summary: unet ${summary.unet_step_ms.toFixed(1)} ms/step, text ${summary.text_encoder_ms.toFixed(1)} ms, ` +
              `vae ${summary.vae_ms.toFixed(1)} ms, end to end ${summary.end_to_end_ms.toFixed(0)} ms`);
  if (profiler) {
    // One more generation of 2 steps, every kernel timed: the UNet's kernels appear twice per step.
    profiler.start();
    await model.generate({ prompt: "profile", seed: 0, steps: 2, scheduler });
    const kernels = await profiler.stop();
    const total = kernels.reduce((n, k) => n + k.ms, 0);
    console.log(`profile: ${kernels.reduce((n, k) => n + k.calls, 0)} dispatches, ${total.toFixed(1)} ms GPU time`);
    for (const k of kernels.slice(0, 40)) {
      console.log(`${k.ms.toFixed(2).padStart(9)} ms ${(100 * k.ms / total).toFixed(1).padStart(5)}% ${String(k.calls).padStart(4)}x  ${k.name}`);
    }
    summary.profile = kernels;
  }
  if (opt.json) await writeFile(opt.json, JSON.stringify(summary, null, 1));
  await model.handle.gpu.sync();  // exiting with GPU work in flight crashes Dawn
  model.dispose();
}

main().then(() => process.exit(0)).catch((err) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});

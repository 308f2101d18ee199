// Generation on WebGPU from the command line: the page's runtime (web/runtime/) in Node, on Dawn.
//
//   node web/node/generate.mjs --model artifacts/sd15-tiny/model.json --prompt "a cat" [--negative ""]
//        [--seed 0] [--steps 20] [--scheduler NAME[,NAME...]] [--guidance 7.5] --out image.png
//        [--compute auto|float32|float16|subgroup-matrix]
//
// Any family the runtime knows (sd15, sdxl: the manifest says which). The scheduler is one of the model's
// (model.json `schedulers`: sd15 dpm, euler, pndm; sdxl euler, dpm); by default the model's own default.
// Several schedulers (`--scheduler pndm,dpm,euler`) give one image each from one model load (the load and
// the first call of each kernel are most of a run's time); --out then names them with `{scheduler}`.
//
// `make generate` runs it. With no GPU, Dawn uses SwiftShader when VK_ICD_FILENAMES points at its ICD
// (the Makefile does that); with a GPU, the GPU. Prints the adapter and per-stage timings.

import { readFile, rename, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { mkdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { pathToFileURL, fileURLToPath } from "node:url";

import { create, globals } from "webgpu";

import { WebSDError } from "../runtime/errors.js";
import { COMPUTES, checkManifest, loadModel, parseJSON } from "../runtime/load.js";
import { checkScheduler } from "../runtime/pipeline.js";
import { encodePNG } from "../runtime/png.js";

const USAGE = `usage: node web/node/generate.mjs --model artifacts/<variant>/model.json [--prompt TEXT]
       [--negative TEXT] [--seed 0] [--steps 20] [--scheduler NAME[,NAME...]] [--guidance 7.5]
       [--out generated.png] [--compute auto|float32|float16|subgroup-matrix] [--dawn-toggle NAME ...] [--quiet]`;

function fail(message) {
  console.error(`error: generate: ${message}`);
  process.exit(1);
}

let parsed;
try {
  parsed = parseArgs({ options: {
    help: { type: "boolean", short: "h", default: false },
    model: { type: "string" },
    prompt: { type: "string", default: "" },
    negative: { type: "string", default: "" },
    seed: { type: "string", default: "0" },
    steps: { type: "string", default: "20" },
    scheduler: { type: "string" }, // default: the manifest's default_scheduler
    guidance: { type: "string", default: "7.5" },
    out: { type: "string", default: "generated.png" },
    "dawn-toggle": { type: "string", multiple: true, default: [] },
    quiet: { type: "boolean", default: false },
    // auto: each submodule's float16 library where the adapter has shader-f16, else float32
    compute: { type: "string", default: "auto" },
  } });
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
const opt = parsed.values;
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}

// "pndm,dpm" or "pndm dpm" (what `make generate SCHEDULER="pndm dpm"` passes)
const schedulerList = (text) => text.split(/[\s,]+/).filter(Boolean);

async function main() {
  if (!opt.model) fail("--model artifacts/<variant>/model.json is required");
  if (!COMPUTES.includes(opt.compute)) fail(`--compute must be one of ${COMPUTES.join(", ")}, not ${opt.compute}`);
  Object.assign(globalThis, globals);
  // One flag for all toggles: Dawn keeps only the last of repeated enable-dawn-features flags.
  const gpu = create(opt["dawn-toggle"].length ? [`enable-dawn-features=${opt["dawn-toggle"].join(",")}`] : []);
  const manifestUrl = pathToFileURL(resolve(opt.model)).href;
  const fetchFile = async (url) => {
    try {
      return new Uint8Array(await readFile(fileURLToPath(url)));
    } catch (err) {
      throw new WebSDError(`cannot read ${fileURLToPath(url)} (${err.code}); build the model with make`);
    }
  };
  // Settings the model cannot take are refused before it loads (a full-size one takes minutes).
  const manifest = checkManifest(parseJSON(await fetchFile(manifestUrl), opt.model), opt.model);
  const schedulers = opt.scheduler === undefined ? [manifest.default_scheduler] : schedulerList(opt.scheduler);
  if (schedulers.length === 0) fail("--scheduler is empty; give one of the model's, or leave it out for its default");
  for (const scheduler of schedulers) checkScheduler(manifest, scheduler);
  if (schedulers.length > 1 && !opt.out.includes("{scheduler}")) {
    fail(`${schedulers.length} schedulers make ${schedulers.length} images: give --out a {scheduler} placeholder, ` +
         `e.g. out-{scheduler}.png`);
  }
  const t0 = performance.now();
  const model = await loadModel({ manifestUrl, gpu, fetchFile, compute: opt.compute,
                                  logger: opt.quiet ? () => {} : console.error });
  const info = model.handle.adapter.info ?? {};
  console.log(`adapter: ${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ") || "unknown"}`);
  console.log(`compute: ${Object.entries(model.libraries).map(([sub, lib]) =>
    `${sub} ${lib.compute}${lib.subgroupMatrix ? " (subgroup matrices)" : ""}`).join(", ")}`);
  console.log(`load: ${(performance.now() - t0).toFixed(0)} ms`);
  for (const scheduler of schedulers) {
    await generateOne(model, { prompt: opt.prompt, negative: opt.negative, seed: Number(opt.seed),
                               steps: Number(opt.steps), scheduler, guidance: Number(opt.guidance) },
                      opt.out.replaceAll("{scheduler}", scheduler));
  }
  model.dispose();
}

async function generateOne(model, settings, out) {
  console.log(`model: ${model.manifest.variant} (${model.manifest.family}), ${settings.scheduler} scheduler`);
  const result = await model.generate({
    ...settings,
    onStep: ({ step, total, ms }) => console.log(`unet step ${step}/${total}: ${ms.toFixed(1)} ms`),
  });
  const t = result.timings;
  const sorted = [...t.steps].sort((a, b) => a - b);
  console.log(`text encoder: ${t.clip.toFixed(1)} ms`);
  console.log(`unet: median ${sorted[sorted.length >> 1].toFixed(1)} ms per step, ${t.steps.length} steps`);
  console.log(`vae: ${t.vae.toFixed(1)} ms`);
  console.log(`total: ${t.total.toFixed(1)} ms`);
  const png = await encodePNG(result.rgba, result.width, result.height, {
    prompt: settings.prompt, negative_prompt: settings.negative, seed: settings.seed, steps: settings.steps,
    scheduler: settings.scheduler, guidance: settings.guidance, model: model.manifest.variant,
  });
  mkdirSync(dirname(resolve(out)), { recursive: true });
  const tmp = `${out}.tmp`;
  await writeFile(tmp, png);
  await rename(tmp, out);
  console.log(`wrote ${out} (${result.width}x${result.height})`);
}

// The runtime's own errors (and a scheduler the model lacks) are one line for the user; anything else is a bug.
const forUser = (err) => err instanceof WebSDError || err?.name === "ScheduleError";
main().then(() => process.exit(0)).catch((err) => fail(forUser(err) ? err.message : err.stack ?? String(err)));

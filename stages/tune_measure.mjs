// tune-measure: times every candidate kernel that `tune_search.py propose` compiled, on the real WebGPU stack
// (tvmjs + Dawn in Node, the page's own runtime path), with WebGPU timestamp queries.
//
//   node stages/tune_measure.mjs --work-dir build/tune/sd15/unet [--repeats 5] [--budget-s 500]
//
// Reads candidates.wasm + candidates.json, writes measured.json: per candidate the median GPU time of one
// call (all of its kernels) and the spread of its rounds (max - min), or the error that stopped it. Each
// kernel's candidates are timed in `repeats` interleaved rounds, every round in a new random order, on random
// inputs allocated once per kernel: timed one after another (each candidate's calls in a row) the same kernel
// measured 3.1 ms in one run and 6.6 in the next on an H200 (bench/results/2026-11-30-h200-attention-kernels.json).
// The device gets the buffer limits the page asks for, but WebGPU's default workgroup limits (256 invocations,
// 16 KiB of workgroup memory), so a candidate that needs more than every adapter offers fails here instead of on
// a visitor's GPU. bench/attention_kernels.py times its kernels with this script too.
// --budget-s stops early (what was measured is kept; `record` proposes the rest again next round).

import { readFile, writeFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { create, globals } from "webgpu";

import { installProfiler, randomTensor } from "../bench/kernel_profile.js";
import { deviceLimits, instantiateLibrary } from "../web/runtime/tvm.js";

const { values: opt } = parseArgs({
  options: {
    "work-dir": { type: "string" },
    repeats: { type: "string", default: "5" },
    "budget-s": { type: "string", default: "480" },
    "allow-cpu-adapter": { type: "boolean", default: false },
    // e.g. vulkan_enable_f16_on_nvidia: Dawn on NVIDIA offers shader-f16 (which float16 libraries' kernels
    // need) only with it
    "dawn-toggle": { type: "string", multiple: true, default: [] },
  },
});

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const shuffled = (xs) => xs.map((x) => [Math.random(), x]).sort((a, b) => a[0] - b[0]).map(([, x]) => x);

// A candidate's first call, inside an error scope: it compiles the pipeline, and a kernel WebGPU rejects shows
// up here. Returns undefined, or the error's first line.
async function check(fn, args, { tvm, device, handle }) {
  try {
    const errorsBefore = handle.gpuErrors.length;
    device.pushErrorScope("validation");
    fn(...args);
    await tvm.webgpu().sync(); // submits, so that encoding errors land in the scope
    const error = await device.popErrorScope();
    if (error || handle.gpuErrors.length > errorsBefore) return String(error?.message ?? handle.gpuErrors.at(-1));
    return undefined;
  } catch (err) {
    if (/aborted|disposed|lost/i.test(String(err?.message))) throw err; // the runtime is gone: stop
    return String(err?.message ?? err);
  }
}

// GPU time of one call: the sum over its kernels.
async function timeCall(fn, args, { tvm, profiler }) {
  profiler.start();
  fn(...args);
  await tvm.webgpu().sync();
  return (await profiler.stop()).reduce((sum, kernel) => sum + kernel.ms, 0);
}

function report(task, results) {
  const mine = results.filter((r) => r.task === task.task);
  const timed = mine.filter((r) => r.ms !== undefined);
  const best = Math.min(...timed.map((r) => r.ms));
  const fallback = mine.find((r) => r.config === null);
  console.log(`${task.task}: ${timed.length ? `best ${best.toFixed(3)} ms` : "no timing"} of ${task.candidates.length}` +
              ` candidates (${mine.length - timed.length} failed, ${task.candidates.length - mine.length} not run)` +
              (fallback?.ms !== undefined ? `; default schedule ${fallback.ms.toFixed(3)} ms` : ""));
}

async function main() {
  if (!opt["work-dir"]) throw new Error("give --work-dir (where tune_search.py propose wrote candidates.*)");
  const workDir = opt["work-dir"];
  Object.assign(globalThis, globals);
  const gpu = create(["disable-dawn-features=timestamp_quantization",
                      ...opt["dawn-toggle"].map((t) => `enable-dawn-features=${t}`)]);
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter: tuning measures on a GPU (see README, Tuning)");
  const info = adapter.info ?? {};
  const adapterName = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" / ");
  if (/swiftshader/i.test(adapterName) && !opt["allow-cpu-adapter"]) {
    throw new Error("the adapter is SwiftShader, a CPU: its timings say nothing about a GPU; tune on a machine " +
                    "with one (--allow-cpu-adapter to try the mechanics anyway)");
  }
  if (!adapter.features.has("timestamp-query")) throw new Error("the adapter has no timestamp-query; cannot time kernels");
  const read = (name) => readFile(join(workDir, name)).catch(() => {
    throw new Error(`cannot read ${join(workDir, name)}: run \`make tune-propose\` first (and copy its work dir here)`);
  });
  const manifest = JSON.parse(await read("candidates.json"));
  const wasm = await read("candidates.wasm");
  const { maxComputeInvocationsPerWorkgroup, maxComputeWorkgroupStorageSize, ...limits } = deviceLimits(adapter);
  // shader-f16 where the adapter has it: a float16 library's candidates use it (the others do not care).
  const features = ["timestamp-query", ...(adapter.features.has("shader-f16") ? ["shader-f16"] : [])];
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits: limits });
  const profiler = installProfiler(device);
  const handle = await instantiateLibrary(wasm, device, { logger: () => {} });
  handle.gpuInstance = gpu;  // Dawn's instance must stay reachable for the whole run (see web/runtime/load.js)
  const { tvm } = handle;
  console.log(`tune-measure: ${adapterName}`);

  const library = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.getGlobalFunc("ffi.SystemLib")(manifest.prefix)));
  const results = [];
  const deadline = performance.now() + Number(opt["budget-s"]) * 1e3;
  const repeats = Number(opt.repeats);
  const context = { tvm, device, handle, profiler };
  let stopped = false;
  const out = join(workDir, "measured.json");
  const save = async (note) => {
    await writeFile(out + ".tmp", JSON.stringify({ adapter: adapterName, repeats, stopped_early: note, candidates: results }, null, 1));
    await rename(out + ".tmp", out);
  };
  try {
    for (const task of manifest.tasks) {
      if (stopped) break;
      tvm.beginScope();
      const args = task.args.map((a) => randomTensor(tvm, handle.gpu, a));
      const mine = [];
      for (const cand of task.candidates) {
        const error = await check(library.getFunction(cand.function), args, context);
        mine.push({ function: cand.function, task: task.task, config: cand.config, times: [],
                    ...(error ? { error: error.split("\n")[0].slice(0, 300) } : {}) });
      }
      const runnable = mine.filter((r) => r.error === undefined);
      for (let round = 0; round < repeats && !stopped; ++round) {
        for (const r of shuffled(runnable)) {
          if (performance.now() > deadline) { stopped = true; break; }
          r.times.push(await timeCall(library.getFunction(r.function), args, context));
        }
      }
      for (const r of mine) {
        if (r.times.length) Object.assign(r, { ms: median(r.times), spread: Math.max(...r.times) - Math.min(...r.times) });
        delete r.times;
      }
      // Candidates the time budget cut off before their first timing are left for the next round.
      results.push(...mine.filter((r) => r.ms !== undefined || r.error !== undefined));
      tvm.endScope();
      report(task, results);
    }
  } catch (err) {
    // The device or the runtime died (a kernel it could not survive): keep what was measured before.
    await save(`failed: ${err.message}`);
    throw err;
  }
  await save(stopped ? "time budget" : null);
  console.log(`tune-measure: ${results.length} candidates -> ${out}${stopped ? " (stopped at the time budget)" : ""}`);
  library.dispose();
  tvm.dispose();
}

main().catch((err) => {
  console.error(`tune-measure: ${process.env.DEBUG ? err.stack : err.message}`);
  process.exit(1);
});

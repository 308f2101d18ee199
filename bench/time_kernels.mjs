// Times the kernels of a candidates.wasm (bench/attention_kernels.py propose) on the GPU, round-robin: every
// round visits every candidate in a new random order, so clock ramps and neighbours' heat spread over all of
// them instead of favouring whichever ran first (tune_measure.mjs times each candidate once, in a row, which
// ranked the same kernel 1st in one run and 9th in the next). Inputs are random, not zero-filled.
//
//   node bench/time_kernels.mjs --work-dir .bench/attention [--rounds 7] [--calls 3]
//
// Writes timed.json beside candidates.json: per candidate the median over rounds of its per-round median GPU time
// (ms), the spread (max - min of the round medians) and any error.

import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { create, globals } from "webgpu";

import { installProfiler, randomTensor } from "./kernel_profile.js";
import { deviceLimits, instantiateLibrary } from "../web/runtime/tvm.js";

const { values: opt } = parseArgs({
  options: {
    "work-dir": { type: "string" },
    rounds: { type: "string", default: "7" },
    calls: { type: "string", default: "3" },
  },
});
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main() {
  const workDir = opt["work-dir"];
  Object.assign(globalThis, globals);
  const gpuObject = create(["disable-dawn-features=timestamp_quantization"]);
  const adapter = await gpuObject.requestAdapter({ powerPreference: "high-performance" });
  const { maxComputeInvocationsPerWorkgroup, maxComputeWorkgroupStorageSize, ...limits } = deviceLimits(adapter);
  const device = await adapter.requestDevice({ requiredFeatures: ["timestamp-query"], requiredLimits: limits });
  const profiler = installProfiler(device);
  const manifest = JSON.parse(await readFile(join(workDir, "candidates.json"), "utf8"));
  const handle = await instantiateLibrary(await readFile(join(workDir, "candidates.wasm")), device, { logger: () => {} });
  const { tvm } = handle;
  const library = tvm.withNewScope(() => tvm.detachFromCurrentScope(tvm.getGlobalFunc("ffi.SystemLib")(manifest.prefix)));

  tvm.beginScope();
  const jobs = [];
  for (const task of manifest.tasks) {
    const args = task.args.map((a) => randomTensor(tvm, handle.gpu, a));
    for (const cand of task.candidates) {
      const job = { task: task.task, function: cand.function, config: cand.config, fn: library.getFunction(cand.function), args, rounds: [] };
      device.pushErrorScope("validation");
      job.fn(...args);
      await tvm.webgpu().sync();
      const error = await device.popErrorScope();
      if (error) job.error = error.message.split("\n")[0].slice(0, 200);
      jobs.push(job);
    }
  }
  const runnable = jobs.filter((j) => !j.error);
  for (let round = 0; round < Number(opt.rounds); ++round) {
    const order = [...runnable].sort(() => Math.random() - 0.5);
    for (const job of order) {
      const perCall = [];
      for (let c = 0; c < Number(opt.calls); ++c) {
        profiler.start();
        job.fn(...job.args);
        await tvm.webgpu().sync();
        perCall.push((await profiler.stop()).reduce((sum, k) => sum + k.ms, 0));
      }
      job.rounds.push(median(perCall));
    }
  }
  const results = jobs.map(({ task, function: fn, config, rounds, error }) => ({
    task, function: fn, config, error,
    ...(rounds.length ? { ms: median(rounds), spread: Math.max(...rounds) - Math.min(...rounds) } : {}),
  }));
  await writeFile(join(workDir, "timed.json"), JSON.stringify({ rounds: Number(opt.rounds), candidates: results }, null, 1));
  tvm.endScope();
  console.log(`time-kernels: ${results.length} kernels, ${opt.rounds} rounds -> ${join(workDir, "timed.json")}`);
  process.exit(0);
}

main().catch((err) => {
  console.error(`time-kernels: ${err.stack ?? err}`);
  process.exit(1);
});

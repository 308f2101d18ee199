// The JS scheduler runners (web/runtime/schedulers/) against diffusers and against the Python runners.
//
//   .venv/bin/python tests/python/scheduler_golden.py      # writes build/schedulers-golden/ (stage output + golden)
//   node --test tests/node/schedulers.test.mjs
//
// tests/python/test_schedulers.py runs both into a temporary folder (SCHEDULERS_GOLDEN names the golden file).
// Per scheduler and step count (1, 2, 3, 4, 5, 14, 15, 20, 50) on (1, 4, 1, 1) float32 latents with a fixed fake
// model: every step's sample is within 1e-5 (relative, max norm) of diffusers' and equal, bit for bit, to the
// Python runner's, and every lincomb call gets the same float32 coefficients as Python's. The lincomb here
// computes in float32, term by term, as the Python test's does, and is async, as the GPU one may be.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { ScheduleError, availableSteps, createScheduler } from "../../web/runtime/schedulers/index.js";

const GOLDEN =
  process.env.SCHEDULERS_GOLDEN ?? fileURLToPath(new URL("../../build/schedulers-golden/golden.json", import.meta.url));
const TOLERANCE = 1e-5;

function loadGolden() {
  if (!existsSync(GOLDEN)) {
    throw new Error(`missing ${GOLDEN}; run: .venv/bin/python tests/python/scheduler_golden.py`);
  }
  const golden = JSON.parse(readFileSync(GOLDEN, "utf8"));
  const consts = {};
  for (const [name, path] of Object.entries(golden.consts)) consts[name] = JSON.parse(readFileSync(path, "utf8"));
  return { cases: golden.cases, consts };
}

const { cases, consts } = loadGolden();

function lincombF32(coeffs, tensors) {
  const out = new Float32Array(tensors[0].length);
  for (let k = 0; k < out.length; k++) {
    let acc = Math.fround(coeffs[0] * tensors[0][k]);
    for (let j = 1; j < tensors.length; j++) acc = Math.fround(acc + Math.fround(coeffs[j] * tensors[j][k]));
    out[k] = acc;
  }
  return out;
}

function relativeError(actual, expected) {
  let diff = 0;
  let scale = 0;
  for (let k = 0; k < expected.length; k++) {
    diff = Math.max(diff, Math.abs(actual[k] - expected[k]));
    scale = Math.max(scale, Math.abs(expected[k]));
  }
  return diff / scale;
}

async function run(c) {
  const sched = createScheduler(c.scheduler, consts[c.scheduler], c.num_inference_steps);
  let calls = [];
  const lincomb = async (coeffs, tensors) => {
    calls.push(coeffs);
    return lincombF32(coeffs, tensors);
  };
  let sample = await lincomb([Math.fround(sched.initNoiseSigma)], [Float32Array.from(c.noise)]);
  const steps = [];
  for (let i = 0; i < sched.numSteps; i++) {
    calls = [];
    const scaled = await sched.scaleModelInput(i, sample, lincomb);
    sample = await sched.step(i, Float32Array.from(c.model_outputs[i]), sample, lincomb);
    steps.push({ timestep: sched.timestep(i), exact: sched.timestepExact(i), scaled, sample, calls });
  }
  return { sched, steps };
}

for (const c of cases) {
  test(`${c.scheduler}, ${c.num_inference_steps} steps: matches diffusers and the Python runner`, async () => {
    const { sched, steps } = await run(c);
    assert.equal(sched.numSteps, c.num_steps);
    assert.equal(sched.initNoiseSigma, c.init_noise_sigma);
    steps.forEach((s, i) => {
      const where = `step ${i}`;
      assert.ok(Number.isInteger(s.timestep) && s.timestep >= 0 && s.timestep < 2 ** 31, where);
      assert.equal(s.timestep, c.runner.timesteps[i], where);
      assert.equal(s.exact, c.diffusers_timesteps[i], where);
      assert.ok(Math.abs(s.timestep - c.diffusers_timesteps[i]) <= 0.5, where);
      assert.deepEqual(s.calls, c.runner.calls[i], `${where}: lincomb coefficients differ from Python's`);
      assert.deepEqual(Array.from(s.scaled), c.runner.scaled[i], `${where}: model input differs from Python's`);
      assert.deepEqual(Array.from(s.sample), c.runner.samples[i], `${where}: sample differs from Python's`);
      const inputError = relativeError(s.scaled, c.diffusers.scaled[i]);
      assert.ok(inputError <= TOLERANCE, `${where}: model input off diffusers' by ${inputError}`);
      const error = relativeError(s.sample, c.diffusers.samples[i]);
      assert.ok(error <= TOLERANCE, `${where}: sample off diffusers' by ${error}`);
    });
  });
}

test("every step count in every constants file runs, with finite coefficients and at most 5 terms", async () => {
  for (const [name, file] of Object.entries(consts)) {
    for (const n of availableSteps(file)) {
      const sched = createScheduler(name, file, n);
      const lincomb = (coeffs, tensors) => {
        assert.ok(coeffs.length >= 1 && coeffs.length <= 5 && coeffs.every(Number.isFinite), `${name} ${n}`);
        return tensors[0];
      };
      let sample = {};
      for (let i = 0; i < sched.numSteps; i++) {
        await sched.scaleModelInput(i, sample, lincomb);
        sample = await sched.step(i, {}, sample, lincomb);
        assert.ok(Number.isInteger(sched.timestep(i)));
      }
      assert.ok(sched.held().length <= 5);
    }
  }
});

test("misuse is refused with a plain message", async () => {
  const pndm = consts.pndm;
  assert.throws(() => createScheduler("ddim", pndm, 20), ScheduleError);
  assert.throws(() => createScheduler("dpm", pndm, 20), /not "dpm"/);
  assert.throws(() => createScheduler("pndm", { ...pndm, version: 99 }, 20), /version/);
  assert.throws(() => createScheduler("pndm", pndm, 1000), /no schedule for 1000 steps/);
  const sched = createScheduler("pndm", pndm, 20);
  await assert.rejects(sched.step(1, null, null, lincombF32), /expected step\(0\)/);
  assert.throws(() => sched.timestep(sched.numSteps), RangeError);
});

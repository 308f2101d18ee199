// The scheduler runners by name: pndm | dpm | euler.
//
//   import { SCHEDULER_FILES, createScheduler } from "./schedulers/index.js";
//   const consts = JSON.parse(await fetchText(`scheduler.v1/${SCHEDULER_FILES.dpm}`));
//   const sched = createScheduler("dpm", consts, 20);         // a step count in availableSteps(consts)
//   let latents = await lincomb([Math.fround(sched.initNoiseSigma)], [noise]);
//   for (let i = 0; i < sched.numSteps; i++) {
//     const x = await sched.scaleModelInput(i, latents, lincomb);
//     const eps = await unet(x, sched.timestep(i), embeddings, guidance);
//     latents = await sched.step(i, eps, latents, lincomb);
//   }
//
// `lincomb(coeffs, tensors)` is the caller's: at run time the compiled sched functions lincomb1..lincomb5.
// The file layout is documented in stages/lib/schedulers.py. No DOM, no Node-only imports.

import { PNDM } from "./pndm.js";
import { DPMSolverMultistep } from "./dpm_solver_multistep.js";
import { EulerDiscrete } from "./euler_discrete.js";
import { ScheduleError } from "./schedule.js";

export { PNDM, DPMSolverMultistep, EulerDiscrete };
export { FORMAT, VERSION, MAX_TERMS, ScheduleError, availableSteps } from "./schedule.js";

// Runtime name -> constants file under artifacts/<variant>/scheduler.v1/ (same table as SCHEDULERS in
// stages/lib/schedulers.py).
export const SCHEDULER_FILES = Object.freeze({
  pndm: "scheduler_pndm_consts.json",
  dpm: "scheduler_dpm_solver_multistep_consts.json",
  euler: "scheduler_euler_discrete_consts.json",
});

const RUNNERS = { pndm: PNDM, dpm: DPMSolverMultistep, euler: EulerDiscrete };

export function createScheduler(name, consts, numInferenceSteps) {
  const Runner = RUNNERS[name];
  if (Runner === undefined) {
    throw new ScheduleError(`unknown scheduler ${JSON.stringify(name)}; known: ${Object.keys(RUNNERS).join(", ")}`);
  }
  return new Runner(consts, numInferenceSteps);
}

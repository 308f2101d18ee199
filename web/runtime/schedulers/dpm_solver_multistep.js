// DPM-Solver++ (multistep) scheduler runner. Mirrors diffusers 0.42.1
// src/diffusers/schedulers/scheduling_dpmsolver_multistep.py, DPMSolverMultistepScheduler with
// algorithm_type="dpmsolver++", solver_order <= 2, epsilon prediction (step, convert_model_output,
// dpm_solver_first_order_update, multistep_dpm_solver_second_order_update).
// Twin of `DPMSolverMultistep` in stages/lib/schedulers.py; constants: scheduler_dpm_solver_multistep_consts.json.
//
// Per step i: m0 = (x - sigma[i] * eps) / alpha[i] is the predicted x0, kept in the fixed 2-long history
// `modelOutputs` (oldest first, like diffusers' model_outputs); then
//   order[i] == 1: prev = c0 * x - c1 * m0
//   order[i] == 2: prev = c0 * x - c1 * m0 - c2 * (m0 - m1)
// The file names the order per index (first step, and the last under lower_order_final, are first order).

import { Runner } from "./schedule.js";

export class DPMSolverMultistep extends Runner {
  constructor(consts, numInferenceSteps) {
    super("dpm", consts, numInferenceSteps);
    const s = this.schedule;
    this._alpha = s.alpha;
    this._sigma = s.sigma;
    this._order = s.order;
    this._c0 = s.c0;
    this._c1 = s.c1;
    this._c2 = s.c2;
    this.modelOutputs = [null, null];
  }

  held() {
    return this.modelOutputs.filter((t) => t !== null);
  }

  async step(i, modelOutput, sample, lincomb) {
    this._advance(i);
    const alpha = this._alpha[i];
    const sigma = this._sigma[i];
    const m0 = await Runner._lincomb(lincomb, [1 / alpha, -sigma / alpha], [sample, modelOutput]);
    this.modelOutputs = [this.modelOutputs[1], m0];
    const c0 = this._c0[i];
    const c1 = this._c1[i];
    const c2 = this._c2[i];
    if (this._order[i] === 1) {
      return Runner._lincomb(lincomb, [c0, -c1], [sample, m0]);
    }
    const m1 = this.modelOutputs[0];
    return Runner._lincomb(lincomb, [c0, -c1 - c2, c2], [sample, m0, m1]);
  }
}

// PNDM (PLMS) scheduler runner. Mirrors diffusers 0.42.1 src/diffusers/schedulers/scheduling_pndm.py,
// PNDMScheduler with skip_prk_steps=True (step_plms, _get_prev_sample), epsilon prediction.
// Twin of `PNDM` in stages/lib/schedulers.py; constants: scheduler_pndm_consts.json.
//
// Per step i: prev = sample_coeff[i] * x - alpha_diff[i] / model_output_denom_coeff[i] * e', where
//   i == 0: x = sample, e' = eps0 (and the sample is saved);
//   i == 1: x = the sample saved at step 0, e' = (eps1 + eps0) / 2 (diffusers repeats the first timestep);
//   i >= 2: x = sample, e' = Adams-Bashforth mix of the last 1..4 outputs (eps1 is not in the history).
// The history `ets` is a fixed 4-long array, oldest first, null where empty.

import { Runner } from "./schedule.js";

// step_plms' weights, newest model output first, by the number of outputs in the history.
const PLMS = {
  1: [1.0],
  2: [3 / 2, -1 / 2],
  3: [23 / 12, -16 / 12, 5 / 12],
  4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
};

export class PNDM extends Runner {
  constructor(consts, numInferenceSteps) {
    super("pndm", consts, numInferenceSteps);
    const s = this.schedule;
    this._sampleCoeff = s.sample_coeff;
    this._alphaDiff = s.alpha_diff;
    this._denom = s.model_output_denom_coeff;
    this.ets = [null, null, null, null];
    this.curSample = null;
  }

  held() {
    return [...this.ets, this.curSample].filter((t) => t !== null);
  }

  async step(i, modelOutput, sample, lincomb) {
    this._advance(i);
    let outputs, weights;
    if (i === 1) {
      // diffusers: counter == 1 keeps ets as is, averages with the first output, restarts from step 0's sample.
      outputs = [modelOutput, this.ets[3]];
      weights = [0.5, 0.5];
      sample = this.curSample;
      this.curSample = null;
    } else {
      this.ets = [...this.ets.slice(1), modelOutput];
      if (i === 0) this.curSample = sample;
      outputs = this.ets.filter((t) => t !== null).reverse();
      weights = PLMS[outputs.length];
    }
    const k = this._alphaDiff[i] / this._denom[i];
    const coeffs = [this._sampleCoeff[i], ...weights.map((w) => -k * w)];
    return Runner._lincomb(lincomb, coeffs, [sample, ...outputs]);
  }
}

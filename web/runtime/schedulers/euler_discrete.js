// Euler scheduler runner. Mirrors diffusers 0.42.1 src/diffusers/schedulers/scheduling_euler_discrete.py,
// EulerDiscreteScheduler with s_churn = 0, epsilon prediction (scale_model_input, step).
// Twin of `EulerDiscrete` in stages/lib/schedulers.py; constants: scheduler_euler_discrete_consts.json.
//
// The UNet input is x * input_scale[i] (= x / sqrt(sigma^2 + 1)); the step is
// prev = x + (sigmas[i + 1] - sigmas[i]) * eps, diffusers' x + (x - x0) / sigma * dt with x0 = x - sigma * eps
// written out. No history. timestep(i) is diffusers' timestep rounded to an integer (the UNet takes int32);
// timestepExact(i) is diffusers' fractional value.

import { Runner } from "./schedule.js";

export class EulerDiscrete extends Runner {
  constructor(consts, numInferenceSteps) {
    super("euler", consts, numInferenceSteps);
    this._sigmas = this.schedule.sigmas;
    this._inputScale = this.schedule.input_scale;
  }

  async scaleModelInput(i, sample, lincomb) {
    return Runner._lincomb(lincomb, [this._inputScale[this._check(i)]], [sample]);
  }

  async step(i, modelOutput, sample, lincomb) {
    this._advance(i);
    const dt = this._sigmas[i + 1] - this._sigmas[i];
    return Runner._lincomb(lincomb, [1.0, dt], [sample, modelOutput]);
  }
}

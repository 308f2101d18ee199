// What the three scheduler runners share: reading one step count's schedule out of a constants file, step
// order checks, and the float32 rounding of coefficients on their way to `lincomb`.
//
// Twin of the `_Runner` base in stages/lib/schedulers.py, which documents the file layout
// (scheduler.v1/<file>.json, written by stages/dump_scheduler.py) and the lincomb contract:
// `lincomb(coeffs, tensors)` returns sum(coeffs[k] * tensors[k]) for 1 to 5 terms; it may return a tensor or
// a promise of one (each call is awaited). Coefficients are computed in float64 (JS numbers, exactly as
// Python floats) and rounded to float32 with Math.fround only when handed to lincomb, so both runtimes hand
// lincomb the same bits.
//
// No DOM, no Node-only imports.

export const FORMAT = "websd-scheduler-consts";
export const VERSION = 1;
export const MAX_TERMS = 5; // the sched submodule compiles lincomb1 ... lincomb5

export class ScheduleError extends Error {
  constructor(message) {
    super(message);
    this.name = "ScheduleError";
  }
}

export function availableSteps(consts) {
  return Object.keys(consts.schedules).map(Number).sort((a, b) => a - b);
}

export function scheduleFor(consts, name, numInferenceSteps) {
  if (consts?.format !== FORMAT || consts?.version !== VERSION) {
    throw new ScheduleError(
      `scheduler constants are format ${JSON.stringify(consts?.format)} version ${consts?.version}; ` +
        `this runtime reads ${FORMAT} version ${VERSION}; rebuild them with make (stage dump-scheduler)`,
    );
  }
  if (consts.scheduler !== name) {
    throw new ScheduleError(`constants are for scheduler ${JSON.stringify(consts.scheduler)}, not "${name}"`);
  }
  const schedule = consts.schedules[String(numInferenceSteps)];
  if (schedule === undefined) {
    const steps = availableSteps(consts);
    throw new ScheduleError(
      `${name}: no schedule for ${numInferenceSteps} steps; the file has ` +
        `${steps[0]}..${steps[steps.length - 1]} (${steps.length} step counts)`,
    );
  }
  return schedule;
}

export class Runner {
  constructor(name, consts, numInferenceSteps) {
    this.name = name;
    const s = scheduleFor(consts, name, numInferenceSteps);
    this.schedule = s;
    this.numInferenceSteps = s.num_inference_steps;
    this.numSteps = s.num_steps; // UNet evaluations; for PNDM numInferenceSteps + 1
    this.initNoiseSigma = s.init_noise_sigma; // initial latents = unit Gaussian noise * this
    this._timesteps = s.timesteps;
    this._next = 0; // the step index step() expects next
  }

  /** The UNet's (int32) timestep at step i. */
  timestep(i) {
    return this._timesteps[this._check(i)];
  }

  /** diffusers' own timestep at step i (differs from timestep(i) only where it is fractional). */
  timestepExact(i) {
    return (this.schedule.timesteps_exact ?? this._timesteps)[this._check(i)];
  }

  /** The UNet input at step i: the sample itself unless the scheduler scales it. */
  async scaleModelInput(i, sample, lincomb) {
    this._check(i);
    return sample;
  }

  /** Tensors kept for later steps (a runtime that frees tensors by hand must keep these). */
  held() {
    return [];
  }

  _check(i) {
    if (!(Number.isInteger(i) && i >= 0 && i < this.numSteps)) {
      throw new RangeError(`${this.name}: step ${i} out of range 0..${this.numSteps - 1}`);
    }
    return i;
  }

  _advance(i) {
    if (i !== this._next) {
      throw new Error(`${this.name}: step(${i}) called, expected step(${this._next}); steps run in order`);
    }
    this._check(i);
    this._next = i + 1;
  }

  static async _lincomb(lincomb, coeffs, tensors) {
    if (!(coeffs.length >= 1 && coeffs.length === tensors.length && coeffs.length <= MAX_TERMS)) {
      throw new Error(`lincomb of ${coeffs.length} coefficients and ${tensors.length} tensors`);
    }
    return await lincomb(coeffs.map(Math.fround), tensors);
  }
}

"""Scheduler runners: each denoising step as float coefficients handed to an injected `lincomb`.

    from lib.schedulers import f32, load_scheduler
    sched = load_scheduler(json.loads(path.read_text()), "dpm", num_inference_steps=20)
    latents = lincomb([f32(sched.init_noise_sigma)], [noise])      # or noise * init_noise_sigma
    for i in range(sched.num_steps):
        x = sched.scale_model_input(i, latents, lincomb)
        eps = unet(x, sched.timestep(i), ...)
        latents = sched.step(i, eps, latents, lincomb)

The constants come from `stages/dump_scheduler.py` (diffusers' own scheduler objects after `set_timesteps`);
this module does no schedule math of its own beyond combining those constants, and it imports neither
torch nor diffusers. `web/runtime/schedulers/*.js` are line-for-line twins of the classes below.

lincomb
    `lincomb(coeffs, tensors)` returns `sum(coeffs[k] * tensors[k])`, 1 to 5 terms (at run time it is the
    compiled `sched` function `lincomb<N>`). A runner never touches tensor data: it only picks tensors and
    computes coefficients. Coefficients are computed in float64 (Python floats, JS numbers) and rounded to
    float32 only when handed to lincomb (`f32` here, `Math.fround` in JS), so Python and JS give lincomb
    the same bits. A runner keeps its history (previous model outputs, a saved sample) as the tensors it
    was given or lincomb returned; `held()` lists them, so a runtime that frees tensors by hand knows which
    ones are still needed.

Step indices
    `step(i, ...)` must be called with i = 0, 1, ..., num_steps - 1 in order (the history depends on it);
    `num_steps` is the number of UNet evaluations, which for PNDM is num_inference_steps + 1 (diffusers
    repeats one timestep; see PNDM below). Per step, lincomb is called once (PNDM, Euler) or twice (DPM),
    plus once in Euler's scale_model_input (PNDM and DPM return the sample itself).

File layout (scheduler.v1/<file>.json, format FORMAT, version VERSION)
    {
      "format": "websd-scheduler-consts", "version": 1,
      "scheduler": "pndm" | "dpm" | "euler",          the runtime name (FILES maps it to the file name)
      "diffusers_class": "PNDMScheduler", "diffusers_version": "0.42.1",
      "config": {...},                               the effective diffusers config (for the record only)
      "schedules": {"1": {...}, "2": {...}, ..., "50": {...}}    (the stage's --steps, default 1-50)
    }
    One file per scheduler holds one schedule per offered step count (keys are the decimal step count), so a
    steps slider can pick any of them without another build. Every schedule has
        num_inference_steps  the step count the user picked (= its key)
        num_steps            how many times the loop runs (len(diffusers scheduler.timesteps))
        timesteps            int, len num_steps: the UNet's int32 timestep at each step
        init_noise_sigma     initial latents = unit Gaussian noise * this
    and per scheduler (all lists indexed by the step i unless said otherwise):
    pndm   sample_coeff, alpha_diff, model_output_denom_coeff:
               prev = sample_coeff * x - alpha_diff * e' / model_output_denom_coeff,
           where x and e' (a linear multistep mix of past model outputs) are chosen by the index as in
           diffusers' PNDMScheduler.step_plms (skip_prk_steps=True).
    dpm    alpha, sigma: m = (x - sigma * eps) / alpha is the predicted x0 (kept in a 2-long history);
           order (1 or 2), c0, c1, c2: prev = c0 * x - c1 * m0 - c2 * (m0 - m1); c2 is 0 where order is 1.
    euler  sigmas (len num_steps + 1, last one 0), input_scale = 1 / sqrt(sigma^2 + 1) (the UNet input is
           x * input_scale), prev = x + (sigmas[i+1] - sigmas[i]) * eps;
           timesteps_exact: diffusers' float timesteps (EulerDiscrete with "linspace" spacing gives
           fractional ones such as 946.42); `timesteps` holds them rounded to the nearest integer (ties to
           even) because the compiled UNet takes an int32 timestep.
    Example: SD 1.5 (PNDMScheduler config), scheduler_pndm_consts.json, schedule "2" (digits cut here):
        {"num_inference_steps": 2, "num_steps": 3, "init_noise_sigma": 1.0, "timesteps": [501, 1, 1],
         "sample_coeff": [1.90530381, 1.90530381, 1.00042762], "alpha_diff": [0.72329718, 0.72329718, 0.00085396],
         "model_output_denom_coeff": [0.45748486, 0.45748486, 0.07033200]}
    and scheduler_euler_discrete_consts.json, schedule "2":
        {"num_inference_steps": 2, "num_steps": 2, "init_noise_sigma": 14.6146469, "timesteps": [999, 0],
         "timesteps_exact": [999.0, 0.0], "sigmas": [14.6146469, 0.0291675, 0.0], "input_scale": [0.0682649, 0.9995749]}
    Numbers are written with full float64 precision (Python's repr), which JSON.parse reads back exactly.
"""

from __future__ import annotations

import struct

FORMAT = "websd-scheduler-consts"
VERSION = 1

# Runtime name -> (diffusers class the constants come from, file name under scheduler.v1/).
SCHEDULERS = {
    "pndm": ("PNDMScheduler", "scheduler_pndm_consts.json"),
    "dpm": ("DPMSolverMultistepScheduler", "scheduler_dpm_solver_multistep_consts.json"),
    "euler": ("EulerDiscreteScheduler", "scheduler_euler_discrete_consts.json"),
}
FILES = {name: file for name, (_, file) in SCHEDULERS.items()}

MAX_TERMS = 5  # the sched submodule compiles lincomb1 ... lincomb5


class ScheduleError(ValueError):
    """The constants file does not fit this runner (wrong format, version, scheduler or step count)."""


def f32(x: float) -> float:
    """Rounds a float64 to the nearest float32 (ties to even), as Math.fround does in JS."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def available_steps(consts: dict) -> list[int]:
    return sorted(int(k) for k in consts["schedules"])


def schedule_for(consts: dict, name: str, num_inference_steps: int) -> dict:
    """The schedule for one step count, after checking the file's format, version and scheduler."""
    if consts.get("format") != FORMAT or consts.get("version") != VERSION:
        raise ScheduleError(f"scheduler constants are format {consts.get('format')!r} version "
                            f"{consts.get('version')!r}; this runtime reads {FORMAT!r} version {VERSION}; "
                            f"rebuild them with `make` (stage dump-scheduler)")
    if consts.get("scheduler") != name:
        raise ScheduleError(f"constants are for scheduler {consts.get('scheduler')!r}, not {name!r}")
    schedule = consts["schedules"].get(str(num_inference_steps))
    if schedule is None:
        steps = available_steps(consts)
        raise ScheduleError(f"{name}: no schedule for {num_inference_steps} steps; the file has "
                            f"{steps[0]}..{steps[-1]} ({len(steps)} step counts)")
    return schedule


class _Runner:
    name = ""

    def __init__(self, consts: dict, num_inference_steps: int):
        s = schedule_for(consts, self.name, num_inference_steps)
        self.schedule = s
        self.num_inference_steps = s["num_inference_steps"]
        self.num_steps = s["num_steps"]
        self.init_noise_sigma = s["init_noise_sigma"]
        self._timesteps = s["timesteps"]
        self._next = 0  # the step index step() expects next

    def timestep(self, i: int) -> int:
        """The UNet's (int32) timestep at step i."""
        return int(self._timesteps[self._check(i)])

    def timestep_exact(self, i: int) -> float:
        """diffusers' own timestep at step i (differs from timestep(i) only for fractional ones)."""
        return float(self.schedule.get("timesteps_exact", self._timesteps)[self._check(i)])

    def scale_model_input(self, i: int, sample, lincomb):
        """The UNet input at step i; the sample itself unless the scheduler scales it."""
        self._check(i)
        return sample

    def held(self) -> list:
        """Tensors kept for later steps."""
        return []

    def _check(self, i: int) -> int:
        if not 0 <= i < self.num_steps:
            raise IndexError(f"{self.name}: step {i} out of range 0..{self.num_steps - 1}")
        return i

    def _advance(self, i: int) -> None:
        if i != self._next:
            raise ValueError(f"{self.name}: step({i}) called, expected step({self._next}); steps run in order")
        self._check(i)
        self._next = i + 1

    @staticmethod
    def _lincomb(lincomb, coeffs: list[float], tensors: list):
        assert 1 <= len(coeffs) == len(tensors) <= MAX_TERMS, (len(coeffs), len(tensors))
        return lincomb([f32(c) for c in coeffs], tensors)


# Linear multistep weights of diffusers' PNDMScheduler.step_plms, newest model output first, by the number of
# outputs in the history.
_PLMS = {
    1: [1.0],
    2: [3 / 2, -1 / 2],
    3: [23 / 12, -16 / 12, 5 / 12],
    4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
}


class PNDM(_Runner):
    """Mirrors diffusers 0.42.1 PNDMScheduler with skip_prk_steps=True (scheduling_pndm.py, step_plms).

    Step 0 saves its sample; step 1 runs the same timestep again from that saved sample with the mean of the
    two model outputs (the second-order start); later steps mix up to 4 past outputs (Adams-Bashforth).
    The history `ets` is a fixed 4-long list, oldest first, None where empty.
    """

    name = "pndm"

    def __init__(self, consts: dict, num_inference_steps: int):
        super().__init__(consts, num_inference_steps)
        s = self.schedule
        self._sample_coeff = s["sample_coeff"]
        self._alpha_diff = s["alpha_diff"]
        self._denom = s["model_output_denom_coeff"]
        self.ets: list = [None] * 4
        self.cur_sample = None

    def held(self) -> list:
        return [t for t in [*self.ets, self.cur_sample] if t is not None]

    def step(self, i: int, model_output, sample, lincomb):
        self._advance(i)
        if i == 1:
            # diffusers: counter == 1 keeps ets as is, averages with the first output, restarts from step 0's sample.
            outputs, weights = [model_output, self.ets[-1]], [0.5, 0.5]
            sample, self.cur_sample = self.cur_sample, None
        else:
            self.ets = [*self.ets[1:], model_output]
            if i == 0:
                self.cur_sample = sample
            outputs = [t for t in reversed(self.ets) if t is not None]
            weights = _PLMS[len(outputs)]
        k = self._alpha_diff[i] / self._denom[i]
        coeffs = [self._sample_coeff[i]] + [-k * w for w in weights]
        return self._lincomb(lincomb, coeffs, [sample, *outputs])


class DPMSolverMultistep(_Runner):
    """Mirrors diffusers 0.42.1 DPMSolverMultistepScheduler, dpmsolver++ (scheduling_dpmsolver_multistep.py).

    Each step converts the model output to a predicted x0 (`convert_model_output`), keeps it in the
    fixed 2-long history `model_outputs` (oldest first, like diffusers'), and runs the first- or
    second-order update that the file's `order` names for this index (first step, and last steps under
    lower_order_final, are first order).
    """

    name = "dpm"

    def __init__(self, consts: dict, num_inference_steps: int):
        super().__init__(consts, num_inference_steps)
        s = self.schedule
        self._alpha, self._sigma = s["alpha"], s["sigma"]
        self._order, self._c0, self._c1, self._c2 = s["order"], s["c0"], s["c1"], s["c2"]
        self.model_outputs: list = [None] * 2

    def held(self) -> list:
        return [t for t in self.model_outputs if t is not None]

    def step(self, i: int, model_output, sample, lincomb):
        self._advance(i)
        alpha, sigma = self._alpha[i], self._sigma[i]
        m0 = self._lincomb(lincomb, [1 / alpha, -sigma / alpha], [sample, model_output])
        self.model_outputs = [*self.model_outputs[1:], m0]
        c0, c1, c2 = self._c0[i], self._c1[i], self._c2[i]
        if self._order[i] == 1:
            return self._lincomb(lincomb, [c0, -c1], [sample, m0])
        m1 = self.model_outputs[-2]
        return self._lincomb(lincomb, [c0, -c1 - c2, c2], [sample, m0, m1])


class EulerDiscrete(_Runner):
    """Mirrors diffusers 0.42.1 EulerDiscreteScheduler with s_churn=0 (scheduling_euler_discrete.py).

    The model input is x / sqrt(sigma^2 + 1); the step is x + (sigma_next - sigma) * eps, which is
    diffusers' x + (x - x0) / sigma * dt with x0 = x - sigma * eps written out. No history.
    """

    name = "euler"

    def __init__(self, consts: dict, num_inference_steps: int):
        super().__init__(consts, num_inference_steps)
        self._sigmas = self.schedule["sigmas"]
        self._input_scale = self.schedule["input_scale"]

    def scale_model_input(self, i: int, sample, lincomb):
        return self._lincomb(lincomb, [self._input_scale[self._check(i)]], [sample])

    def step(self, i: int, model_output, sample, lincomb):
        self._advance(i)
        dt = self._sigmas[i + 1] - self._sigmas[i]
        return self._lincomb(lincomb, [1.0, dt], [sample, model_output])


RUNNERS = {cls.name: cls for cls in (PNDM, DPMSolverMultistep, EulerDiscrete)}


def load_scheduler(consts: dict, name: str, num_inference_steps: int) -> _Runner:
    """The runner `name` (pndm, dpm, euler) over the parsed constants file, for one step count."""
    if name not in RUNNERS:
        raise ScheduleError(f"unknown scheduler {name!r}; known: {', '.join(RUNNERS)}")
    return RUNNERS[name](consts, num_inference_steps)

"""Shared by the scheduler tests: SD 1.5's scheduler config, a fake model, diffusers' own denoising loop, the
Python runners' loop, and the golden file the JS runners are checked against.

    .venv/bin/python tests/python/scheduler_golden.py            # writes build/schedulers-golden/
    node --test tests/node/schedulers.test.mjs

(tests/python/test_schedulers.py does both into a temporary folder.) The golden file holds, per scheduler and
step count, the fake model's outputs on tiny (1, 4, 1, 1) float32 latents, diffusers' sample after every step,
and the Python runner's lincomb coefficients and samples (lincomb in float32, term by term, the same way the
JS test computes it, so JS must match those bit for bit). The constants the JS runners read are the real
stage output, written by stages/dump_scheduler.py next to the golden file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))

import dump_scheduler  # noqa: E402
from lib.schedulers import FILES, SCHEDULERS, load_scheduler  # noqa: E402

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, as released.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

GOLDEN_STEPS = [1, 2, 3, 4, 5, 14, 15, 20, 50]
GOLDEN_SHAPE = (1, 4, 1, 1)
VARIANT = "sd15-golden"


def write_weights(folder: Path, config: dict = SD15_SCHEDULER_CONFIG) -> Path:
    """A diffusers folder with only scheduler/scheduler_config.json (all dump-scheduler reads)."""
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    return folder


def dump(out: Path, config: dict = SD15_SCHEDULER_CONFIG, steps: list[str] | None = None) -> Path:
    """Runs the dump-scheduler stage into out/<VARIANT>/; returns the scheduler.v1 folder."""
    weights = write_weights(out / "weights", config)
    argv = ["--variant-dir", str(out / VARIANT), "--weights", str(weights)] + (["--steps", *steps] if steps else [])
    dump_scheduler.main(argv)
    return out / VARIANT / "scheduler.v1"


def load_consts(scheduler_dir: Path) -> dict[str, dict]:
    return {name: json.loads((scheduler_dir / file).read_text()) for name, file in FILES.items()}


def fake_model(num_steps: int, shape=GOLDEN_SHAPE, dtype=np.float32, seed: int = 0):
    """Initial noise and a fixed sequence of 'model outputs' correlated with it, as a real noise prediction is."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape)
    outputs = [0.8 * noise + 0.6 * rng.standard_normal(shape) for _ in range(num_steps)]
    return noise.astype(dtype), [o.astype(dtype) for o in outputs]


def diffusers_run(name: str, config: dict, n: int, noise, outputs):
    """diffusers' pipeline loop with the fake model: timesteps, init_noise_sigma, model inputs, samples."""
    import diffusers
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    sched = getattr(diffusers, SCHEDULERS[name][0]).from_config(config)
    sched.set_timesteps(n)
    sample = torch.from_numpy(noise) * sched.init_noise_sigma
    scaled, samples = [], []
    for i, t in enumerate(sched.timesteps):
        scaled.append(sched.scale_model_input(sample, t).numpy())
        sample = sched.step(torch.from_numpy(outputs[i]), t, sample).prev_sample
        samples.append(sample.numpy())
    return dict(timesteps=sched.timesteps.tolist(), init_noise_sigma=float(sched.init_noise_sigma),
                outputs=outputs, scaled=scaled, samples=samples)


def lincomb_f32(coeffs, tensors):
    """The GPU lincomb's arithmetic: float32 throughout, terms added left to right."""
    acc = np.float32(coeffs[0]) * tensors[0].astype(np.float32)
    for c, t in zip(coeffs[1:], tensors[1:]):
        acc = acc + np.float32(c) * t.astype(np.float32)
    return acc


def lincomb_f64(coeffs, tensors):
    return sum(float(c) * t.astype(np.float64) for c, t in zip(coeffs, tensors))


def runner_run(name: str, consts: dict, n: int, noise, outputs, lincomb=lincomb_f32):
    """The Python runner's loop with the same fake model; records every lincomb call's coefficients."""
    calls = []

    def recording(coeffs, tensors):
        calls.append(list(coeffs))
        return lincomb(coeffs, tensors)

    sched = load_scheduler(consts, name, n)
    sample = recording([sched.init_noise_sigma], [noise])
    scaled, samples, steps_calls = [], [], []
    for i in range(sched.num_steps):
        calls.clear()
        scaled.append(sched.scale_model_input(i, sample, recording))
        sample = sched.step(i, outputs[i], sample, recording)
        samples.append(sample)
        steps_calls.append([list(c) for c in calls])
    return dict(sched=sched, scaled=scaled, samples=samples, calls=steps_calls)


def golden(scheduler_dir: Path) -> dict:
    consts = load_consts(scheduler_dir)
    cases = []
    for name in SCHEDULERS:
        for n in GOLDEN_STEPS:
            noise, outputs = fake_model(consts[name]["schedules"][str(n)]["num_steps"])
            ref = diffusers_run(name, SD15_SCHEDULER_CONFIG, n, noise, outputs)
            ours = runner_run(name, consts[name], n, noise, outputs)
            flat = lambda arrays: [np.asarray(a, np.float32).ravel().tolist() for a in arrays]  # noqa: E731
            cases.append(dict(
                scheduler=name, num_inference_steps=n, num_steps=len(ref["timesteps"]),
                diffusers_timesteps=ref["timesteps"], init_noise_sigma=ref["init_noise_sigma"],
                noise=flat([noise])[0], model_outputs=flat(outputs),
                diffusers=dict(scaled=flat(ref["scaled"]), samples=flat(ref["samples"])),
                runner=dict(timesteps=[ours["sched"].timestep(i) for i in range(ours["sched"].num_steps)],
                            scaled=flat(ours["scaled"]), samples=flat(ours["samples"]), calls=ours["calls"]),
            ))
    return {"consts": {name: str(scheduler_dir / file) for name, file in FILES.items()}, "cases": cases}


def main(out: Path) -> Path:
    scheduler_dir = dump(out)
    path = out / "golden.json"
    path.write_text(json.dumps(golden(scheduler_dir)))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return path


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "schedulers-golden")

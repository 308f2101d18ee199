"""dump-scheduler: the model's scheduler_config.json -> step constants for the schedulers its family offers
(PNDM, DPM-Solver++, Euler: stages/lib/models.py).

    python stages/dump_scheduler.py --variant-dir artifacts/sd15-tiny --weights artifacts/sd15-tiny/weights

Loads `<weights>/scheduler/scheduler_config.json` into each diffusers class (`from_config`, so the other two
schedulers get the model's betas, offset and prediction type with their own defaults, as a diffusers user
switching schedulers would), calls `set_timesteps(n)` for every step count n in `--steps`, and writes the
arrays each step needs to artifacts/<variant>/scheduler.v1/<file>.json, one file per scheduler holding a
schedule per step count. Betas are never re-derived: alphas_cumprod, sigmas, timesteps and init_noise_sigma
are read from the diffusers objects; coefficients are combined from them in float64. The file layout and
the runners that read it are in stages/lib/schedulers.py (Python) and web/runtime/schedulers/ (JS).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import (  # noqa: E402
    StageError,
    log_stage,
    paths_from,
    run_stage,
    stage_parser,
    write_json_if_changed,
    write_provenance,
)
from lib.models import family, read_config  # noqa: E402
from lib.schedulers import FORMAT, SCHEDULERS, VERSION  # noqa: E402

STAGE = "dump-scheduler"
# The step counts a page's slider may offer: 1-50 is about 0.4 MB of JSON over the three files (1-100 is 1.6 MB:
# the size grows with the square of the largest count, every schedule being stored whole).
DEFAULT_STEPS = "1-50"
INT32_MAX = 2**31 - 1


def parse_steps(spec: list[str]) -> list[int]:
    """`20`, `1-100`, `20 50 10-12` -> sorted step counts."""
    steps = set()
    for item in spec:
        try:
            lo, _, hi = item.partition("-")
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise StageError(f"--steps {item!r}: give step counts like 20 or ranges like 1-100") from None
        if not 1 <= lo <= hi:
            raise StageError(f"--steps {item!r}: step counts start at 1")
        steps.update(range(lo, hi + 1))
    return sorted(steps)


def floats(values) -> list[float]:
    return [float(v) for v in values]


def int_timesteps(name: str, timesteps) -> list[int]:
    out = [int(t) for t in timesteps]
    if [float(t) for t in timesteps] != [float(t) for t in out] or not all(0 <= t <= INT32_MAX for t in out):
        raise StageError(f"{name}: timesteps {list(timesteps)[:5]}... are not int32 integers; the UNet takes an "
                         f"int32 timestep")
    return out


def require_config(name: str, config, **wanted) -> None:
    for key, allowed in wanted.items():
        if config[key] not in allowed:
            raise StageError(f"{name}: {key}={config[key]!r} is not supported here (supported: {allowed}); "
                             f"change the model's scheduler_config.json or extend stages/lib/schedulers.py")


# ----------------------------------------------------------------------------------------------------------
# One function per scheduler: a diffusers object after set_timesteps(n) -> that step count's schedule.


def pndm_schedule(sched, n: int) -> dict:
    # Mirrors PNDMScheduler.step_plms and _get_prev_sample (diffusers 0.42.1), skip_prk_steps=True.
    timesteps = int_timesteps("pndm", sched.timesteps.tolist())
    alphas_cumprod = sched.alphas_cumprod.double().tolist()
    final_alpha_cumprod = float(sched.final_alpha_cumprod)
    ratio = sched.config.num_train_timesteps // sched.num_inference_steps
    sample_coeff, alpha_diff, denom = [], [], []
    for i, t in enumerate(timesteps):
        prev_t = t - ratio
        if i == 1:  # step_plms: counter == 1 redoes the first step
            prev_t, t = t, t + ratio
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[prev_t] if prev_t >= 0 else final_alpha_cumprod
        b_t, b_prev = 1 - a_t, 1 - a_prev
        sample_coeff.append((a_prev / a_t) ** 0.5)
        alpha_diff.append(a_prev - a_t)
        denom.append(a_t * b_prev**0.5 + (a_t * b_t * a_prev) ** 0.5)
    return dict(timesteps=timesteps, sample_coeff=sample_coeff, alpha_diff=alpha_diff,
                model_output_denom_coeff=denom)


def dpm_schedule(sched, n: int) -> dict:
    # Mirrors DPMSolverMultistepScheduler.step, convert_model_output, dpm_solver_first_order_update and
    # multistep_dpm_solver_second_order_update (diffusers 0.42.1), dpmsolver++, epsilon prediction.
    timesteps = int_timesteps("dpm", sched.timesteps.tolist())
    cfg = sched.config
    sigmas = sched.sigmas.double().tolist()  # len(timesteps) + 1, float32 values
    alpha, sigma = [], []
    for s in sigmas:
        a_t, s_t = sched._sigma_to_alpha_sigma_t(s)  # diffusers' own conversion, here on float64
        alpha.append(float(a_t))
        sigma.append(float(s_t))
    lam = [math.log(a) - math.log(s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]
    steps = len(timesteps)
    order, c0, c1, c2 = [], [], [], []
    for i in range(steps):
        lower_order_final = i == steps - 1 and (
            cfg.euler_at_final or (cfg.lower_order_final and steps < 15) or cfg.final_sigmas_type == "zero")
        first = cfg.solver_order == 1 or i == 0 or lower_order_final  # i == 0: lower_order_nums < 1
        h = lam[i + 1] - lam[i]
        exp_neg_h = math.exp(-h)
        c0.append(sigma[i + 1] / sigma[i])
        c1.append(alpha[i + 1] * (exp_neg_h - 1.0))
        if first:
            order.append(1)
            c2.append(0.0)
            continue
        r0 = (lam[i] - lam[i - 1]) / h
        order.append(2)
        if cfg.solver_type == "midpoint":
            c2.append(0.5 * c1[i] / r0)
        else:  # heun
            c2.append(-(alpha[i + 1] * ((exp_neg_h - 1.0) / h + 1.0)) / r0)
    return dict(timesteps=timesteps, alpha=alpha[:-1], sigma=sigma[:-1], order=order, c0=c0, c1=c1, c2=c2)


def euler_schedule(sched, n: int) -> dict:
    # Mirrors EulerDiscreteScheduler.scale_model_input and step (diffusers 0.42.1), s_churn = 0.
    exact = sched.timesteps.double().tolist()
    timesteps = int_timesteps("euler", [round(t) for t in exact])  # round() ties to even, like numpy.rint
    sigmas = sched.sigmas.double().tolist()
    return dict(timesteps=timesteps, timesteps_exact=exact, sigmas=sigmas,
                input_scale=[1 / (s * s + 1) ** 0.5 for s in sigmas[:-1]])


def check_pndm(config) -> None:
    require_config("pndm", config, skip_prk_steps=(True,), prediction_type=("epsilon",))


def check_dpm(config) -> None:
    require_config("dpm", config, algorithm_type=("dpmsolver++",), solver_order=(1, 2),
                   solver_type=("midpoint", "heun"), prediction_type=("epsilon",), thresholding=(False,),
                   variance_type=(None,), use_flow_sigmas=(False,))


def check_euler(config) -> None:
    require_config("euler", config, prediction_type=("epsilon",), timestep_type=("discrete",))


BUILDERS = {"pndm": (check_pndm, pndm_schedule), "dpm": (check_dpm, dpm_schedule),
            "euler": (check_euler, euler_schedule)}


def build_consts(name: str, config: dict, steps: list[int]) -> dict:
    """The whole constants file of scheduler `name` for a diffusers scheduler config."""
    import diffusers

    class_name, _ = SCHEDULERS[name]
    check, schedule = BUILDERS[name]
    sched = getattr(diffusers, class_name).from_config(config)
    check(sched.config)
    schedules = {}
    for n in steps:
        sched.set_timesteps(n)
        s = schedule(sched, n)
        s.update(num_inference_steps=n, num_steps=len(s["timesteps"]),
                 init_noise_sigma=float(sched.init_noise_sigma))
        bad = [k for k, v in s.items() if isinstance(v, list) and not all(math.isfinite(x) for x in v)]
        if bad:
            raise StageError(f"{name}, {n} steps: non-finite values in {', '.join(bad)}")
        schedules[str(n)] = s
    # For the record; strict JSON has no infinities (DPM's lambda_min_clipped defaults to -inf): those become strings.
    effective = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in sched.config.items() if not k.startswith("_")}
    return {"format": FORMAT, "version": VERSION, "scheduler": name, "diffusers_class": class_name,
            "diffusers_version": diffusers.__version__, "config": effective, "schedules": schedules}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], submodule=False, weights=True)
    parser.add_argument("--steps", nargs="+", default=[DEFAULT_STEPS],
                        help=f"step counts to write schedules for: counts and ranges (default {DEFAULT_STEPS})")
    args = parser.parse_args(argv)
    paths = paths_from(args)
    steps = parse_steps(args.steps)

    config_path = args.weights / "scheduler" / "scheduler_config.json"
    if not config_path.is_file():
        raise StageError(f"missing {config_path}: --weights must be a diffusers folder (save_pretrained layout); "
                         f"generated ones are made by `make {paths.family} WEIGHTS=tiny|random`")
    config = read_config(config_path)

    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # from_config warns about the other class's keys; expected here

    for name in family(paths.family).schedulers:
        class_name, file = SCHEDULERS[name]
        out = paths.scheduler_dir / file
        consts = build_consts(name, config, steps)
        try:
            json.dumps(consts, allow_nan=False)  # JSON.parse refuses NaN and Infinity: fail here, not in the browser
        except ValueError as err:
            raise StageError(f"{name}: the constants are not strict JSON ({err})") from None
        changed = write_json_if_changed(out, consts)
        write_provenance(out, STAGE, [config_path], {"steps": f"{steps[0]}-{steps[-1]}" if
                                                      steps == list(range(steps[0], steps[-1] + 1)) else steps})
        n20 = consts["schedules"].get("20")
        print(f"{'wrote' if changed else 'unchanged'} {out} ({class_name}, {len(steps)} step counts "
              f"{steps[0]}..{steps[-1]}, {out.stat().st_size / 1e3:.0f} kB"
              + (f", 20 steps: {n20['num_steps']} UNet calls, t={n20['timesteps'][0]}..{n20['timesteps'][-1]}"
                 if n20 else "") + ")")
    log_stage(paths, STAGE)


if __name__ == "__main__":
    run_stage(STAGE, main)

# Expected output for SD 1.5's scheduler_config.json (default --steps 1-50), about 3 s:
# wrote artifacts/sd15/scheduler.v1/scheduler_pndm_consts.json (PNDMScheduler, 50 step counts 1..50, 120 kB, 20 steps: 21 UNet calls, t=951..1)
# wrote artifacts/sd15/scheduler.v1/scheduler_dpm_solver_multistep_consts.json (DPMSolverMultistepScheduler, 50 step counts 1..50, 188 kB, 20 steps: 20 UNet calls, t=999..50)
# wrote artifacts/sd15/scheduler.v1/scheduler_euler_discrete_consts.json (EulerDiscreteScheduler, 50 step counts 1..50, 108 kB, 20 steps: 20 UNet calls, t=999..0)
# A second run prints "unchanged" for each and leaves the files (and their mtimes) alone.

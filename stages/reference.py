"""reference: the same generation in PyTorch/diffusers on the CPU, the ground truth for every runtime.

    python stages/reference.py --model sd15 --weights DIR --prompt "..." --negative "" --seed 0 --steps 20 \
        --scheduler dpm --guidance 7.5 --out reference.png

The initial latents come from the project's seeded generator (stages/lib/noise.py, reimplemented bit for bit
in web/runtime/noise.js), so the browser, `make generate` and this script start from the same noise. The PNG
carries the settings in a text chunk.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import StageError, run_stage  # noqa: E402
from lib.models import check_weights_folder, family  # noqa: E402
from lib.noise import gaussian_noise  # noqa: E402
from lib.schedulers import SCHEDULERS  # noqa: E402


# Optional parts of a released folder that play no part in the image (SD 1.5's safety checker).
LOAD_OPTIONS = {"StableDiffusionPipeline": dict(safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False)}


def diffusers_pipeline(fam, weights: Path, scheduler: str):
    import diffusers

    pipe = getattr(diffusers, fam.pipeline_class).from_pretrained(weights, **LOAD_OPTIONS.get(fam.pipeline_class, {}))
    scheduler_class = getattr(diffusers, SCHEDULERS[scheduler][0])
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(weights: Path, *, prompt: str, negative: str, seed: int, steps: int, scheduler: str | None = None,
             guidance: float, model: str = "sd15"):
    """Returns uint8 (height, width, 3)."""
    import numpy as np
    import torch

    fam = family(model)
    pipe = diffusers_pipeline(fam, weights, scheduler or fam.schedulers[0])
    if fam.zero_empty_negative:
        # What the runtimes do with an empty negative prompt: zero embeddings, as diffusers does for None.
        pipe.register_to_config(force_zeros_for_empty_prompt=True)
        negative = negative or None
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    latents = torch.from_numpy(gaussian_noise(seed, shape))
    with torch.no_grad():
        image = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                     latents=latents, output_type="pil").images[0]
    return np.asarray(image)


def save_png(path: Path, rgb, settings: dict) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in settings.items():
        info.add_text(key, str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="default: the family's (stages/lib/models.py)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fam = family(args.model)
    check_weights_folder(args.weights, fam)
    args.scheduler = args.scheduler or fam.schedulers[0]
    if args.scheduler not in fam.schedulers:
        raise StageError(f"--scheduler {args.scheduler}: {fam.name} offers {', '.join(fam.schedulers)}")
    if args.steps < 1:
        raise StageError(f"--steps {args.steps}: give at least 1 step")
    start = time.time()
    settings = dict(prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                    scheduler=args.scheduler, guidance=args.guidance, model=args.model)
    rgb = generate(args.weights, prompt=args.prompt, negative=args.negative, seed=args.seed, steps=args.steps,
                   scheduler=args.scheduler, guidance=args.guidance, model=fam.name)
    save_png(args.out, rgb, settings)
    print(f"reference: {rgb.shape[1]}x{rgb.shape[0]} {args.scheduler} {args.steps} steps seed {args.seed}, "
          f"{time.time() - start:.1f}s -> {args.out}")


if __name__ == "__main__":
    run_stage("reference", main)

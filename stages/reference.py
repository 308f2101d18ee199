"""reference: the same generation in PyTorch/diffusers on the CPU, the ground truth for every runtime.

    python stages/reference.py --model sd15 --weights DIR --prompt "..." --negative "" --seed 0 --steps 20 \
        --scheduler dpm --guidance 7.5 --out reference.png

The pipeline and its noise: stages/lib/diffusers_reference.py. The PNG carries the settings in a text chunk.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import diffusers_reference  # noqa: E402
from lib.cli import StageError, run_stage  # noqa: E402
from lib.models import check_weights_folder, family  # noqa: E402
from lib.schedulers import SCHEDULERS  # noqa: E402


def generate(weights: Path, *, prompt: str, negative: str, seed: int, steps: int, scheduler: str | None = None,
             guidance: float, model: str = "sd15"):
    """Returns uint8 (height, width, 3)."""
    fam = family(model)
    return diffusers_reference.generate(diffusers_reference.from_folder(fam, weights), fam, prompt=prompt,
                                        negative=negative, seed=seed, steps=steps, scheduler=scheduler,
                                        guidance=guidance)


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

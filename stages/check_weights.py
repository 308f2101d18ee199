"""check-weights: is WEIGHTS a diffusers folder of this model family, with readable settings files and safetensors
weights? Nothing if so, else one line and exit 1.

    python3 stages/check_weights.py --model sd15 --weights /models/stable-diffusion-v1-5

make runs it when it reads the Makefile, for a WEIGHTS folder (not tiny or random), so a wrong folder stops the
build before anything starts, with the same words the stages use (stages/lib/models.py). Standard library only:
it runs before `make setup` has made the venv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import run_stage  # noqa: E402
from lib.models import check_weights_folder, family  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", type=Path, required=True)
    args = parser.parse_args()
    check_weights_folder(args.weights, family(args.model))


if __name__ == "__main__":
    run_stage("check-weights", main)

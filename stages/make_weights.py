"""weights: generate a model with the real architecture and random weights, in diffusers' layout.

    python stages/make_weights.py --variant-dir artifacts/sd15-tiny --size tiny

`tiny` is small (tests, demo), `random` is full size (measuring build cost). The result is an ordinary
diffusers folder (what `save_pretrained` writes) under artifacts/<variant>/weights/, so every later stage
reads generated and real weights through one code path. Deterministic: the same seed gives the same bytes.
The tokenizer is the real CLIP BPE vocabulary, built from the copy that the PyPI package open_clip_torch
ships (nothing comes from a hub).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import dir_if_changed, log_stage, paths_from, run_stage, stage_parser  # noqa: E402
from lib.models import family  # noqa: E402

SEED = 0


def generate(fam, size: str, out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lib.clip_vocab import write_clip_tokenizer

    configs = fam.generated_configs[size]
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs["clip"]))
    scheduler = PNDMScheduler.from_config(configs["scheduler"])
    with tempfile.TemporaryDirectory() as vocab_dir:
        write_clip_tokenizer(Path(vocab_dir))
        tokenizer = CLIPTokenizer.from_pretrained(vocab_dir)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    # Write the tokenizer as released SD 1.5 folders hold it (vocab.json + merges.txt), not in the
    # tokenizer.json form transformers 5 saves, so generated and real weights take the same path.
    shutil.rmtree(out / "tokenizer")
    write_clip_tokenizer(out / "tokenizer")


def main():
    parser = stage_parser(__doc__, submodule=False)
    parser.add_argument("--size", choices=["tiny", "random"], required=True)
    args = parser.parse_args()
    paths = paths_from(args)
    fam = family(paths.family)
    with dir_if_changed(paths.weights_dir) as tmp:
        generate(fam, args.size, tmp)
    log_stage(paths, "weights")
    total = sum(p.stat().st_size for p in paths.weights_dir.rglob("*") if p.is_file())
    print(f"weights {paths.variant}: {args.size} {fam.name} model, {total / 2**20:.1f} MiB -> {paths.weights_dir}")


if __name__ == "__main__":
    run_stage("weights", main)

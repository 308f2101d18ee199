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


# Padding of each tokenizer folder, as the released models have it (SDXL's second tokenizer pads with "!").
PAD_TOKENS = {"tokenizer_2": "!"}
# Pipeline arguments that are not model parts: nothing optional is generated.
PIPELINE_OPTIONS = {
    "StableDiffusionPipeline": dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
    "StableDiffusionXLPipeline": dict(add_watermarker=False, force_zeros_for_empty_prompt=True),
}


def generate(fam, size: str, out: Path) -> None:
    """One part at a time: each model is made, saved and freed before the next (full-size SDXL's UNet alone is
    5 GB in float16), and model_index.json comes from a pipeline of the same parts with empty (meta) weights."""
    import diffusers
    import torch
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lib.clip_vocab import EOS, write_clip_tokenizer

    configs = fam.generated_configs[size]
    dtype = getattr(torch, fam.generated_dtypes.get(size, "float32"))

    def make(sub):
        config = configs[sub.name]
        if sub.kind == "unet":
            return diffusers.UNet2DConditionModel(**config)
        if sub.kind == "vae":
            return diffusers.AutoencoderKL(**config)
        model_class = CLIPTextModelWithProjection if sub.pooled else CLIPTextModel
        return model_class(CLIPTextConfig(**config))

    weighted = [sub for sub in fam.submodules if sub.folder]
    parts = {}
    with init_empty_weights():
        parts.update((sub.folder, make(sub)) for sub in weighted)
    scheduler_config = configs["scheduler"]
    parts["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    with tempfile.TemporaryDirectory() as vocab_dir:
        for folder in fam.tokenizer_folders:
            write_clip_tokenizer(Path(vocab_dir) / folder, pad_token=PAD_TOKENS.get(folder, EOS))
            parts[folder] = CLIPTokenizer.from_pretrained(Path(vocab_dir) / folder)
    pipe = getattr(diffusers, fam.pipeline_class)(**parts, **PIPELINE_OPTIONS[fam.pipeline_class])
    pipe.save_config(out)  # model_index.json only
    parts["scheduler"].save_pretrained(out / "scheduler")
    for i, sub in enumerate(weighted):
        torch.manual_seed(SEED + i)
        # Made in its dtype (not made in float32 and cast: the float32 copy is the memory peak).
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = make(sub)
        finally:
            torch.set_default_dtype(default)
        model.save_pretrained(out / sub.folder, safe_serialization=True)
        del model
    # The tokenizers as released folders hold them (vocab.json + merges.txt), not in the tokenizer.json form
    # transformers 5 saves, so generated and real weights take the same path.
    for folder in fam.tokenizer_folders:
        write_clip_tokenizer(out / folder, pad_token=PAD_TOKENS.get(folder, EOS))


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

"""The same generation in PyTorch/diffusers: the ground truth every runtime is compared with.

stages/reference.py (`make reference`) runs it on the CPU from a weights folder; the GPU benchmark
(bench/torch_reference.py) on the GPU, from models it fills with seeded weights. The initial latents come from
the project's seeded generator (lib/noise.py, reimplemented bit for bit in web/runtime/noise.js), so every
runtime starts from the same noise.
"""

from __future__ import annotations

from pathlib import Path

from .noise import gaussian_noise
from .schedulers import SCHEDULERS

# Optional parts of a released folder that play no part in the image (SD 1.5's safety checker, SDXL's
# watermark), and SDXL's zero embeddings for an empty negative prompt, what the runtimes do.
PIPELINE_OPTIONS = {
    "StableDiffusionPipeline": dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
    "StableDiffusionXLPipeline": dict(add_watermarker=False, force_zeros_for_empty_prompt=True),
}
# What from_pretrained may be told: the rest of PIPELINE_OPTIONS is set through the config.
LOAD_OPTIONS = {"StableDiffusionPipeline": PIPELINE_OPTIONS["StableDiffusionPipeline"]}


def from_folder(fam, weights: Path):
    """The family's diffusers pipeline with the weights of a diffusers folder."""
    import diffusers

    return getattr(diffusers, fam.pipeline_class).from_pretrained(weights, **LOAD_OPTIONS.get(fam.pipeline_class, {}))


def from_parts(fam, models: dict, weights: Path):
    """The family's diffusers pipeline of `models` ({diffusers folder: model}, e.g. seeded ones), with the
    tokenizers and scheduler of the folder `weights` (which needs no weight files)."""
    import diffusers
    from transformers import CLIPTokenizer

    tokenizers = {folder: CLIPTokenizer.from_pretrained(weights / folder) for folder in fam.tokenizer_folders}
    scheduler = diffusers.EulerDiscreteScheduler.from_pretrained(weights / "scheduler")  # replaced in generate()
    return getattr(diffusers, fam.pipeline_class)(**models, **tokenizers, scheduler=scheduler,
                                                  **PIPELINE_OPTIONS.get(fam.pipeline_class, {}))


def generate(pipe, fam, *, prompt: str, negative: str, seed: int, steps: int, scheduler: str | None = None,
             guidance: float):
    """uint8 (height, width, 3) from `pipe` on its own device."""
    import diffusers
    import numpy as np
    import torch

    scheduler_class = getattr(diffusers, SCHEDULERS[scheduler or fam.schedulers[0]][0])
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if fam.zero_empty_negative:
        # What the runtimes do with an empty negative prompt: zero embeddings, as diffusers does for None.
        pipe.register_to_config(force_zeros_for_empty_prompt=True)
        negative = negative or None
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    latents = torch.from_numpy(gaussian_noise(seed, shape)).to(pipe.device, pipe.unet.dtype)
    with torch.no_grad():
        image = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                     latents=latents, output_type="pil").images[0]
    return np.asarray(image)

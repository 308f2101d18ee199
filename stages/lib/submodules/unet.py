"""UNet with classifier-free guidance inside: one call per denoising step."""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config


class GuidedUNet(torch.nn.Module):
    """(latents, timestep, [negative; positive] embeddings, guidance) -> guided noise prediction.

    The timestep is float32: WebGPU has no 64-bit numbers, and Euler's "linspace" spacing gives fractional
    timesteps (946.42...) that diffusers passes to the UNet unrounded; float32 holds every integer timestep
    exactly too. The guidance scale is an input, not a constant, so the page can change it without a rebuild.
    """

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, latents, timestep, embeddings, guidance):
        both = torch.cat([latents, latents])
        noise = self.unet(both, timestep, embeddings, return_dict=False)[0]
        uncond, cond = noise.chunk(2)
        return uncond + guidance * (cond - uncond)


def entries(weights: Path) -> list[Entry]:
    from diffusers import UNet2DConditionModel

    config = read_config(weights / "unet" / "config.json")
    torch.manual_seed(0)  # the values are never used (weights come from dump-params); keep tracing deterministic
    unet = UNet2DConditionModel.from_config(config).eval()
    size = config["sample_size"]
    inputs = (
        torch.zeros(1, config["in_channels"], size, size),
        torch.tensor(1.0),
        torch.zeros(2, 77, config["cross_attention_dim"]),
        torch.tensor(7.5),
    )
    return [Entry("unet", GuidedUNet(unet), inputs, ("latents", "timestep", "embeddings", "guidance"), "unet.")]

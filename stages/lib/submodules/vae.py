"""VAE decoder from latents straight to packed RGBA pixels."""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config


class DecodeToRGBA(torch.nn.Module):
    """latents (1, 4, H, W) -> int32 (8H, 8W) holding RGBA bytes, R in the lowest byte, A = 255.

    The pixel math is diffusers' own (VaeImageProcessor: x / 2 + 0.5, clamp, * 255, round), so bytes
    match the reference pipeline. Packing stays inside int32 without overflow: r + 256 g + 65536 b is at
    most 2^24 - 1, and alpha 255 << 24 is -2^24 as a signed 32-bit number.
    """

    def __init__(self, vae):
        super().__init__()
        # Only the decoder half; holding these two (not the whole VAE) keeps the encoder's weights out of
        # the traced parameters, and their names equal the checkpoint's.
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.scaling_factor = float(vae.config.scaling_factor)

    def forward(self, latents):
        image = self.decoder(self.post_quant_conv(latents / self.scaling_factor))
        rgb = ((image[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.int32)
        return rgb[0] + rgb[1] * 256 + rgb[2] * 65536 - 16777216


def entries(fam, sub, weights: Path) -> list[Entry]:
    from diffusers import AutoencoderKL

    config = read_config(weights / sub.folder / "config.json")
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(config).float().eval()
    latent = config["sample_size"] // 2 ** (len(config["block_out_channels"]) - 1)
    inputs = (torch.zeros(1, config["latent_channels"], latent, latent),)
    return [Entry("vae", DecodeToRGBA(vae), inputs, ("latents",))]

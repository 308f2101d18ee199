"""UNet with classifier-free guidance inside: one call per denoising step."""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config


class GuidedUNet(torch.nn.Module):
    """(latents, timestep, [negative; positive] embeddings of each text encoder, [added conditions], guidance)
    -> guided noise prediction.

    The timestep is float32: WebGPU has no 64-bit numbers, and Euler's "linspace" spacing gives fractional
    timesteps (946.42...) that diffusers passes to the UNet unrounded; float32 holds every integer timestep
    exactly too. The guidance scale is an input, not a constant, so the page can change it without a rebuild.
    With several text encoders (SDXL) their embeddings are concatenated along the channels here, and a UNet
    with `addition_embed_type: text_time` takes the pooled text embedding (2, P) and the six time ids (2, 6):
    original height and width, crop top and left, target height and width.
    """

    def __init__(self, unet, text_encoders: int):
        super().__init__()
        self.unet = unet
        self.text_encoders = text_encoders
        self.added = unet.config.addition_embed_type == "text_time"

    def forward(self, latents, timestep, *rest):
        embeddings = torch.cat(rest[:self.text_encoders], dim=-1) if self.text_encoders > 1 else rest[0]
        added = {"text_embeds": rest[-3], "time_ids": rest[-2]} if self.added else None
        guidance = rest[-1]
        both = torch.cat([latents, latents])
        noise = self.unet(both, timestep, embeddings, added_cond_kwargs=added, return_dict=False)[0]
        uncond, cond = noise.chunk(2)
        return uncond + guidance * (cond - uncond)


def entries(fam, sub, weights: Path) -> list[Entry]:
    from diffusers import UNet2DConditionModel

    config = read_config(weights / sub.folder / "config.json")
    torch.manual_seed(0)  # the values are never used (weights come from dump-params); keep tracing deterministic
    unet = UNet2DConditionModel.from_config(config).float().eval()
    size = config["sample_size"]
    inputs = [torch.zeros(1, config["in_channels"], size, size), torch.tensor(1.0)]
    names = ["latents", "timestep"]
    encoders = [read_config(weights / t.folder / "config.json") for t in fam.text_encoders]
    widths = [e["hidden_size"] for e in encoders]
    for i, width in enumerate(widths):
        inputs.append(torch.zeros(2, encoders[i]["max_position_embeddings"], width))
        names.append("embeddings" + (f"_{i + 1}" if i else ""))
    if config.get("addition_embed_type") == "text_time":
        (pooled,) = [t for t in fam.text_encoders if t.pooled]
        width = read_config(weights / pooled.folder / "config.json")["projection_dim"]
        inputs += [torch.zeros(2, width), torch.zeros(2, 6)]
        names += ["text_embeds", "time_ids"]
    inputs.append(torch.tensor(7.5))
    names.append("guidance")
    return [Entry("unet", GuidedUNet(unet, len(widths)), tuple(inputs), tuple(names), "unet.")]

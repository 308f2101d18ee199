"""CLIP text encoder over the negative and the positive prompt at once."""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config


class TextEncoder(torch.nn.Module):
    """input_ids int32 (2, 77), row 0 negative, row 1 positive -> last hidden state (2, 77, D)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


def entries(weights: Path) -> list[Entry]:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**read_config(weights / "text_encoder" / "config.json"))
    # Eager attention: torch's SDPA exports a "safe softmax" guard with boolean tensors between kernels,
    # and WGSL has no 8-bit storage type for them.
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    ids = torch.zeros(2, config.max_position_embeddings, dtype=torch.int32)
    return [Entry("clip", TextEncoder(model), (ids,), ("input_ids",), "text_encoder.")]

"""CLIP text encoder over the negative and the positive prompt at once.

SD 1.5 reads the last hidden state of its one encoder. SDXL reads the penultimate hidden state of both of its
encoders (CLIP ViT-L and OpenCLIP ViT-bigG), and the pooled, projected embedding of the second
(CLIPTextModelWithProjection); the table (stages/lib/models.py: hidden_layer, pooled) says which.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config


class TextEncoder(torch.nn.Module):
    """input_ids int32 (2, 77), row 0 negative, row 1 positive; keep float32 (2,), 1 or 0 per row
    -> hidden state (2, 77, D) [, pooled (2, P)], each row multiplied by its keep.

    `keep` 0 makes a row zero: SDXL's empty negative prompt is zero embeddings, not the encoding of ""
    (diffusers' force_zeros_for_empty_prompt)."""

    def __init__(self, text_encoder, hidden_layer: int, pooled: bool):
        super().__init__()
        self.text_encoder = text_encoder
        self.hidden_layer = hidden_layer
        self.pooled = pooled
        # upper[i, j] = 1 where i <= j: a row times it is that row's running sum (TVM legalizes no cumsum).
        length = text_encoder.config.max_position_embeddings
        self.register_buffer("upper", torch.triu(torch.ones(length, length)), persistent=False)

    def forward(self, input_ids, keep):
        # (transformers 5's CLIPTextModel is the text transformer itself; the projection model holds one.)
        transformer = getattr(self.text_encoder, "text_model", self.text_encoder)
        out = transformer(input_ids, output_hidden_states=self.hidden_layer != -1)
        hidden = out.last_hidden_state if self.hidden_layer == -1 else out.hidden_states[self.hidden_layer]
        hidden = hidden * keep[:, None, None]
        if not self.pooled:
            return hidden
        return hidden, self.text_encoder.text_projection(self.end_of_text(input_ids, out.last_hidden_state)) * keep[:, None]

    def end_of_text(self, input_ids, last_hidden):
        """The final hidden state at each row's first end-of-text token, as transformers pools it, selected by a
        0/1 mask: its argmax gives 64-bit indices, which WebGPU has not. Configs with the legacy eos_token_id 2
        pool at the highest id (argmax), which is the end-of-text token, the last of CLIP's vocabulary."""
        config = self.text_encoder.config
        end = config.vocab_size - 1 if config.eos_token_id == 2 else config.eos_token_id
        is_end = (input_ids == end).to(last_hidden.dtype)
        first = is_end * ((is_end @ self.upper) == 1).to(last_hidden.dtype)
        return (first[:, :, None] * last_hidden).sum(dim=1)


def entries(fam, sub, weights: Path) -> list[Entry]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(**read_config(weights / sub.folder / "config.json"))
    # Eager attention: torch's SDPA exports a "safe softmax" guard with boolean tensors between kernels,
    # and WGSL has no 8-bit storage type for them.
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = (CLIPTextModelWithProjection if sub.pooled else CLIPTextModel)(config).float().eval()
    ids = torch.zeros(2, config.max_position_embeddings, dtype=torch.int32)
    keep = torch.ones(2)
    wrapper = TextEncoder(model, sub.hidden_layer, sub.pooled)
    return [Entry(sub.name, wrapper, (ids, keep), ("input_ids", "keep"), "text_encoder.")]

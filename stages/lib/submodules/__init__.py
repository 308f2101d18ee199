"""One file per submodule: the PyTorch functions (input -> output wrappers) that trace.py exports.

Each module (one per submodule kind in stages/lib/models.py) has `entries(family, sub, weights: Path) -> list[Entry]`. The wrappers fold the small pieces of the
pipeline into the graph (classifier-free guidance into the UNet, the negative/positive batch into CLIP,
latent scaling and RGBA packing into the VAE), so the runtimes only move tensors between functions.
Every model is traced in float32 (`.float()`, whatever dtype its config.json records: float16 releases record
theirs); dump-params converts the stored weights, and the float16 libraries come from the transform stage.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch


@dataclass
class Entry:
    function: str  # name of the compiled function
    module: torch.nn.Module  # wrapper; its state_dict keys under `weights_prefix` are checkpoint names
    example_inputs: tuple
    input_names: tuple[str, ...]
    weights_prefix: str = ""  # wrapper attribute holding the diffusers/transformers model, e.g. "unet."


def load_entries(fam, sub, weights):
    """The functions of submodule `sub` of family `fam` (stages/lib/models.py), traced from the diffusers folder
    `weights`."""
    import importlib

    return importlib.import_module(f".{sub.kind}", __name__).entries(fam, sub, weights)


def _plain_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    assert dropout_p == 0.0 and not is_causal and not enable_gqa, "inference attention only"
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Scaling the query, not the scores: the same product, but on 4096 x 40 values per head instead of
    # 4096 x 4096 (at 64 x 64 latents that multiply alone took 1.1 ms per attention on an H100).
    scores = (query * scale) @ key.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores + attn_mask
    return scores.softmax(dim=-1) @ value


@contextlib.contextmanager
def plain_attention():
    """Exports attention as matmul -> softmax -> matmul. torch.export lowers scaled_dot_product_attention with a
    "safe softmax" guard over boolean tensors; WGSL has no 8-bit storage type, so those kernels would not compile
    for WebGPU (and rows are never fully masked here, so the guard does nothing)."""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _plain_attention
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original

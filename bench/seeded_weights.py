"""Seeded checkpoint weights, the same bit for bit in PyTorch (here) and in the WebGPU benchmark
(bench/seeded_weights.mjs), so both run one model on one GPU without carrying gigabytes of weights there.

Each tensor is a function of its name (as the traced model names it: stages/lib/models.py parameter_name) and
shape alone: element i is a 32-bit integer hash of i and the FNV-1a hash of the name, mapped to [-1, 1) in steps
of 2^-23 (exact in float32), then scaled in float64 and rounded once to float32:
- matrices and convolutions: by 1 / sqrt(fan_in) (PyTorch's default initialisation bound), so activations
  keep their scale through the depth of the model;
- normalisation weights: 1 + 0.1 u; other vectors and scalars (biases): 0.1 u.
"""

from __future__ import annotations

import math
import re

MASK = 0xFFFFFFFF
NORM_WEIGHT = re.compile(r"norm.*\.weight$")


def name_seed(name: str) -> int:
    h = 0x811C9DC5
    for byte in name.encode():
        h = ((h ^ byte) * 0x01000193) & MASK
    return h


def seeded_tensor(name: str, shape, device="cpu"):
    """float32 torch tensor of `shape` for the weight `name`."""
    import torch

    count = math.prod(shape)
    # int64 products wrap modulo 2^64; their low 32 bits are the 32-bit products the JS side takes.
    x = (torch.arange(count, dtype=torch.int64, device=device) * 0x9E3779B9 + name_seed(name)) & MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    x ^= x >> 16
    unit = (x >> 8).to(torch.float64) / 2**23 - 1
    if len(shape) >= 2:
        value = unit * (1 / math.sqrt(math.prod(shape[1:])))
    elif NORM_WEIGHT.search(name):
        value = 1 + unit * 0.1
    else:
        value = unit * 0.1
    return value.to(torch.float32).reshape(shape)

"""Scheduler arithmetic: weighted sums of latent-shaped tensors.

Every step of PNDM, DPM-Solver++ and Euler is a weighted sum of the current sample and (a short history
of) model outputs; the weights are computed on the host from the scheduler constants. So one family of
tiny functions serves every scheduler: lincomb<N>(coeffs (N,), x_0 .. x_{N-1}) = sum_i coeffs[i] * x_i.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import Entry
from ..models import read_config

MAX_TERMS = 5


class LinComb(torch.nn.Module):
    def forward(self, coeffs, *tensors):
        total = coeffs[0] * tensors[0]
        for i in range(1, len(tensors)):
            total = total + coeffs[i] * tensors[i]
        return total


def entries(fam, sub, weights: Path) -> list[Entry]:
    config = read_config(weights / sub.config_folder / "config.json")
    shape = (1, config["out_channels"], config["sample_size"], config["sample_size"])
    result = []
    for n in range(1, MAX_TERMS + 1):
        inputs = (torch.ones(n),) + tuple(torch.zeros(shape) for _ in range(n))
        names = ("coeffs",) + tuple(f"x{i}" for i in range(n))
        result.append(Entry(f"lincomb{n}", LinComb(), inputs, names))
    return result

"""One file per submodule: the PyTorch functions (input -> output wrappers) that trace.py exports.

Each module has `entries(weights: Path | None) -> list[Entry]`. The wrappers fold the small pieces of the
pipeline into the graph (classifier-free guidance into the UNet, the negative/positive batch into CLIP,
latent scaling and RGBA packing into the VAE), so the runtimes only move tensors between functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Entry:
    function: str  # name of the compiled function
    module: torch.nn.Module  # wrapper; its state_dict keys under `weights_prefix` are checkpoint names
    example_inputs: tuple
    input_names: tuple[str, ...]
    weights_prefix: str = ""  # wrapper attribute holding the diffusers/transformers model, e.g. "unet."


def load_entries(submodule: str, weights):
    from . import clip, sched, unet, vae

    return {"clip": clip, "unet": unet, "vae": vae, "sched": sched}[submodule].entries(weights)

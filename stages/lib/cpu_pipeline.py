"""Text to image over the compiled CPU libraries: the Python twin of web/runtime/pipeline.js.

    pipe = CompiledPipeline(Path("artifacts/sd15-tiny"), tokenizer_dir=Path("artifacts/sd15-tiny/weights/tokenizer"),
                            compute="float32")  # or "float16": each submodule's float16 library where it has one
    rgba = pipe.generate("a cat", negative="", seed=0, steps=20, scheduler="dpm", guidance=7.5)

It runs the same compiled functions in the same order as the web runtime (clip -> scheduler loop of
unet + lincomb -> vae), so comparing it with diffusers checks the compiled modules, the scheduler
constants and the glue at once, on the CPU. Tensors stay TVM tensors between calls, as on the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cli import ArtifactPaths, StageError, library_name
from .models import family
from .noise import gaussian_noise
from .relax_io import load_meta
from .schedulers import FILES, f32, load_scheduler
from .tensor_cache import load_params, prepare_params

MAX_LENGTH = 77


class CompiledPipeline:
    def __init__(self, variant_dir: Path, tokenizer_dir: Path, compute: str = "float32"):
        import tvm
        from transformers import CLIPTokenizer
        from tvm import relax

        self.paths = ArtifactPaths(Path(variant_dir))
        fam = family(self.paths.family)
        self.vms, self.params, self.metas = {}, {}, {}
        for sub in fam.submodules:
            p = ArtifactPaths(self.paths.variant_dir, library_name(sub.name, compute if compute in sub.computes
                                                                    else "float32"))
            lib = p.lib("cpu")
            if not lib.exists():
                raise StageError(f"missing {lib}; build it with `make {fam.name} WEIGHTS=...`")
            self.vms[sub.name] = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
            self.metas[sub.name] = load_meta(p.lowered, f"make {fam.name} WEIGHTS=...")
            if sub.folder:
                # Converted to the library's dtypes as web/runtime/params.js does: the same values.
                (fmeta,) = [f for f in self.metas[sub.name]["functions"].values() if f["params"]]
                stored, _ = load_params(p.params_dir, tvm.cpu(), [w["dtype"] for w in fmeta["params"]])
                self.params[sub.name] = prepare_params(self.vms[sub.name], self.metas[sub.name], stored)
        self.tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        self.tvm = tvm

    def _run(self, sub: str, function: str, *inputs):
        return self.vms[sub][function](*inputs, *self.params.get(sub, []))

    def lincomb(self, coeffs, tensors):
        coeff = self.tvm.runtime.tensor(np.array([f32(c) for c in coeffs], dtype=np.float32))
        return self.vms["sched"][f"lincomb{len(tensors)}"](coeff, *tensors)

    def encode(self, prompt: str, negative: str):
        ids = self.tokenizer([negative, prompt], padding="max_length", max_length=MAX_LENGTH,
                             truncation=True, return_tensors="np").input_ids.astype(np.int32)
        return self._run("clip", "clip", self.tvm.runtime.tensor(ids))

    def generate(self, prompt: str, *, negative: str = "", seed: int = 0, steps: int = 20,
                 scheduler: str = "dpm", guidance: float = 7.5, latent_shape=None) -> np.ndarray:
        """Returns the image as uint8 (height, width, 4) RGBA."""
        tensor = self.tvm.runtime.tensor
        consts = json.loads((self.paths.scheduler_dir / FILES[scheduler]).read_text())
        sched = load_scheduler(consts, scheduler, steps)
        embeddings = self.encode(prompt, negative)
        noise = gaussian_noise(seed, latent_shape or self.latent_shape())
        latents = self.lincomb([sched.init_noise_sigma], [tensor(noise)])
        scale = tensor(np.array(guidance, dtype=np.float32))
        for i in range(sched.num_steps):
            model_input = sched.scale_model_input(i, latents, self.lincomb)
            timestep = tensor(np.array(sched.timestep_exact(i), dtype=np.float32))
            noise_pred = self._run("unet", "unet", model_input, timestep, embeddings, scale)
            latents = sched.step(i, noise_pred, latents, self.lincomb)
        packed = self._run("vae", "vae", latents).numpy()
        return packed.view(np.uint8).reshape(*packed.shape, 4)

    def latent_shape(self):
        return tuple(self.metas["unet"]["functions"]["unet"]["inputs"][0]["shape"])

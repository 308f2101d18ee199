"""Text to image over the compiled CPU libraries: the Python twin of web/runtime/pipeline.js.

    pipe = load_pipeline(Path("artifacts/sdxl-tiny"), weights=Path("artifacts/sdxl-tiny/weights"),
                         compute="float32")  # or "float16": each submodule's float16 library where it has one
    rgba = pipe.generate("a cat", negative="", seed=0, steps=20, scheduler="euler", guidance=7.5)

It reads the variant's model.json, as the web runtime does, and runs the same compiled functions in the same
order (text encoders -> scheduler loop of unet + lincomb -> vae), so comparing it with diffusers checks the
compiled modules, the scheduler constants and the glue at once, on the CPU. Tensors stay TVM tensors between
calls, as on the GPU. The manifest's `family` picks the pipeline class (PIPELINES): the SD 1.5 one, and the SDXL
one, which adds the pooled text embedding and the six time ids to each UNet call.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .cli import ArtifactPaths, StageError, library_name
from .noise import gaussian_noise
from .relax_io import load_meta
from .schedulers import f32, load_scheduler
from .tensor_cache import load_params, prepare_params


class CompiledPipeline:
    """SD 1.5: one text encoder, the UNet takes its embeddings."""

    def __init__(self, variant_dir: Path, manifest: dict, weights: Path, compute: str = "float32"):
        import tvm
        from transformers import CLIPTokenizer
        from tvm import relax

        self.tvm, self.manifest = tvm, manifest
        self.paths = ArtifactPaths(Path(variant_dir))
        make = f"make {manifest['family']} WEIGHTS=..."
        self.vms, self.params = {}, {}
        for sub, record in manifest["submodules"].items():
            p = ArtifactPaths(self.paths.variant_dir, library_name(sub, compute if compute in record["libraries"]
                                                                    else "float32"))
            lib = p.lib("cpu")
            if not lib.exists():
                raise StageError(f"missing {lib}; build it with `{make} TARGETS=\"webgpu cpu\"`")
            self.vms[sub] = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
            if "params" in record:
                # Converted to the library's dtypes as web/runtime/params.js does: the same values.
                meta = load_meta(p.lowered, make)
                (fmeta,) = [f for f in meta["functions"].values() if f["params"]]
                stored, _ = load_params(p.params_dir, tvm.cpu(), [w["dtype"] for w in fmeta["params"]])
                self.params[sub] = prepare_params(self.vms[sub], meta, stored)
        # The tokenizers of the model's own folder, through transformers: the runtime's JS tokenizer is checked
        # against them (tests/python/test_tokenizer.py).
        self.tokenizers = {t["submodule"]: CLIPTokenizer.from_pretrained(weights / t["tokenizer"])
                           for t in manifest["text_encoders"]}

    def _run(self, sub: str, function: str, *inputs):
        return self.vms[sub][function](*inputs, *self.params.get(sub, []))

    def _tensor(self, values, dtype=np.float32):
        return self.tvm.runtime.tensor(np.asarray(values, dtype=dtype))

    def lincomb(self, coeffs, tensors):
        return self.vms["sched"][f"lincomb{len(tensors)}"](self._tensor([f32(c) for c in coeffs]), *tensors)

    def encode(self, prompt: str, negative: str) -> list:
        """Each text encoder's outputs (hidden states [, pooled]) over [negative; prompt], in manifest order."""
        keep = [0.0 if negative == "" and self.manifest["zero_empty_negative"] else 1.0, 1.0]
        outputs = []
        for encoder in self.manifest["text_encoders"]:
            sub = encoder["submodule"]
            ids = self.tokenizers[sub]([negative, prompt], padding="max_length", max_length=encoder["max_length"],
                                       truncation=True, return_tensors="np").input_ids
            result = self._run(sub, sub, self._tensor(ids, np.int32), self._tensor(keep))
            outputs.append(tuple(result) if encoder["pooled"] else (result,))  # a pooled encoder returns a pair
        return outputs

    def conditioning(self, encoded: list) -> list:
        """What the UNet takes between the timestep and the guidance scale."""
        ((embeddings,),) = encoded
        return [embeddings]

    def generate(self, prompt: str, *, negative: str = "", seed: int = 0, steps: int = 20,
                 scheduler: str | None = None, guidance: float = 7.5) -> np.ndarray:
        """Returns the image as uint8 (height, width, 4) RGBA."""
        scheduler = scheduler or self.manifest["default_scheduler"]
        if scheduler not in self.manifest["schedulers"]:
            raise StageError(f"{self.manifest['family']} has no scheduler {scheduler!r}; it has "
                             f"{', '.join(self.manifest['schedulers'])}")
        consts = json.loads((self.paths.variant_dir / self.manifest["schedulers"][scheduler]["path"]).read_text())
        sched = load_scheduler(consts, scheduler, steps)
        conditioning = self.conditioning(self.encode(prompt, negative))
        noise = gaussian_noise(seed, tuple(self.manifest["latent_shape"]))
        latents = self.lincomb([sched.init_noise_sigma], [self._tensor(noise)])
        scale = self._tensor(guidance)
        for i in range(sched.num_steps):
            model_input = sched.scale_model_input(i, latents, self.lincomb)
            timestep = self._tensor(sched.timestep_exact(i))
            noise_pred = self._run("unet", "unet", model_input, timestep, *conditioning, scale)
            latents = sched.step(i, noise_pred, latents, self.lincomb)
        packed = self._run("vae", "vae", latents).numpy()
        return packed.view(np.uint8).reshape(*packed.shape, 4)


class CompiledXLPipeline(CompiledPipeline):
    """SDXL: two text encoders whose hidden states the UNet concatenates, the second's pooled embedding, and the
    six time ids (original size, crop top-left, target size), the same for both rows: no crop, the image size."""

    def conditioning(self, encoded: list) -> list:
        (hidden_1,), (hidden_2, pooled) = encoded
        height, width = self.manifest["image"]["height"], self.manifest["image"]["width"]
        time_ids = self._tensor([[height, width, 0, 0, height, width]] * 2)
        return [hidden_1, hidden_2, pooled, time_ids]


PIPELINES = {"sd15": CompiledPipeline, "sdxl": CompiledXLPipeline}


def load_pipeline(variant_dir: Path, weights: Path, compute: str = "float32") -> CompiledPipeline:
    """The pipeline of the family that variant_dir/model.json names."""
    manifest_path = Path(variant_dir) / "model.json"
    if not manifest_path.exists():
        raise StageError(f"missing {manifest_path}; build the model with `make <family> WEIGHTS=...`")
    manifest = json.loads(manifest_path.read_text())
    try:
        pipeline_class = PIPELINES[manifest["family"]]
    except KeyError:
        raise StageError(f"{manifest_path}: no pipeline for family {manifest.get('family')!r}; known: "
                         f"{', '.join(PIPELINES)}") from None
    return pipeline_class(variant_dir, manifest, Path(weights), compute)

"""Model families: which submodules each has, where their weights live in a diffusers folder, which
source tensors are left out on purpose, and the configurations of the generated `tiny` and `random` models.

A family is data; the code that traces a submodule lives in `stages/lib/submodules/<name>.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .cli import StageError


@dataclass(frozen=True)
class Submodule:
    name: str
    # Folder of the diffusers layout holding its weights and config; None for submodules without weights.
    folder: str | None
    # For a submodule without weights: the folder whose config.json shapes it (the scheduler math takes the
    # UNet's latent shape).
    config_from: str | None = None
    # Source tensors this submodule does not use, as name prefixes (declared, never silently skipped).
    unused_prefixes: tuple[str, ...] = ()
    # Whether it also gets a float16 library (`<name>-f16`), which runtimes choose where the WebGPU adapter has
    # shader-f16. Not for submodules without weights (the scheduler math is float32 by design).
    float16: bool = False

    @property
    def config_folder(self) -> str:
        return self.folder or self.config_from

    @property
    def computes(self) -> tuple[str, ...]:
        return ("float32", "float16") if self.float16 else ("float32",)


@dataclass(frozen=True)
class Family:
    name: str
    wasm_name: str
    submodules: tuple[Submodule, ...]
    tokenizer_folders: tuple[str, ...]
    pipeline_class: str
    # Configurations for WEIGHTS=tiny (small, same architecture) and WEIGHTS=random (full size).
    generated_configs: dict = field(default_factory=dict)

    def submodule(self, name: str) -> Submodule:
        for sub in self.submodules:
            if sub.name == name:
                return sub
        known = ", ".join(s.name for s in self.submodules)
        raise StageError(f"model {self.name} has no submodule {name!r} (it has: {known})")

    def library(self, name: str) -> Submodule:
        """The submodule of library `name` ('unet' or its float16 library 'unet-f16'), checked to exist."""
        from .cli import FLOAT16_SUFFIX, split_library

        base, compute = split_library(name)
        sub = self.submodule(base)
        if compute not in sub.computes:
            raise StageError(f"model {self.name}: submodule {base} has no float16 library ({base}{FLOAT16_SUFFIX}); "
                             f"it computes in float32 only")
        return sub

    def libraries(self) -> list[tuple[Submodule, str]]:
        """Every (submodule, compute dtype) pair the family's .wasm holds a library for."""
        return [(sub, compute) for sub in self.submodules for compute in sub.computes]

    def system_lib_prefix(self, submodule: str, compute: str = "float32") -> str:
        # TVM 0.27 crashes on a system_lib_prefix shorter than 8 bytes (it becomes an inline small string
        # that `IRModule.get_attr` cannot return); family + submodule names keep every prefix longer.
        # The prefix becomes part of C symbol names: 'sd15_unet_f16_', not the folder name 'unet-f16'.
        prefix = f"{self.name}_{submodule}_" + ("f16_" if compute == "float16" else "")
        assert len(prefix) >= 8, prefix
        return prefix


# SD 1.5 as released (runwayml/stable-diffusion-v1-5), written out so the full-size random model needs no hub.
_SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
_SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=[128, 256, 512, 512], norm_num_groups=32, scaling_factor=0.18215,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
_SD15_CLIP = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
_SD15_SCHEDULER = dict(
    _class_name="PNDMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    clip_sample=False, prediction_type="epsilon", trained_betas=None,
)

# The tiny model keeps every block type, the attention layout and the VAE's 8x downsampling; it shrinks
# channels, layers and the latent size (16 x 16 latents, 128 x 128 images) so tests run in seconds.
_TINY_UNET = dict(
    _SD15_UNET, sample_size=16, layers_per_block=1, block_out_channels=[32, 32, 64, 64],
    cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8,
)
_TINY_VAE = dict(_SD15_VAE, sample_size=128, layers_per_block=1, block_out_channels=[8, 16, 32, 32], norm_num_groups=8)
_TINY_CLIP = dict(_SD15_CLIP, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  projection_dim=64)

SD15 = Family(
    name="sd15",
    wasm_name="stable_diffusion_webgpu.wasm",
    submodules=(
        Submodule("clip", "text_encoder", unused_prefixes=("text_model.embeddings.position_ids",), float16=True),
        Submodule("unet", "unet", float16=True),
        Submodule("vae", "vae", unused_prefixes=("encoder.", "quant_conv."), float16=True),
        Submodule("sched", None, config_from="unet"),
    ),
    tokenizer_folders=("tokenizer",),
    pipeline_class="StableDiffusionPipeline",
    generated_configs={
        "tiny": dict(unet=_TINY_UNET, vae=_TINY_VAE, clip=_TINY_CLIP, scheduler=_SD15_SCHEDULER),
        "random": dict(unet=_SD15_UNET, vae=_SD15_VAE, clip=_SD15_CLIP, scheduler=_SD15_SCHEDULER),
    },
)

FAMILIES = {f.name: f for f in (SD15,)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise StageError(f"unknown model {name!r}; known models: {', '.join(FAMILIES)}") from None


# Pipelines of other families that a diffusers folder may hold (its model_index.json says which), so that one
# is named in the refusal instead of failing somewhere inside a stage.
OTHER_PIPELINES = {
    "StableDiffusionXLPipeline": "SDXL",
    "StableDiffusionXLImg2ImgPipeline": "SDXL (refiner)",
    "StableDiffusion3Pipeline": "Stable Diffusion 3",
    "FluxPipeline": "FLUX",
    "StableDiffusionUpscalePipeline": "the SD x4 upscaler",
    "StableDiffusionInpaintPipeline": "SD inpainting",
}


def read_config(path: Path) -> dict:
    """A JSON settings file of a diffusers folder (config.json, scheduler_config.json, model_index.json), or a
    StageError naming the file and what is wrong with it."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing; a diffusers folder (as save_pretrained writes it) has one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StageError(f"{path} is not valid JSON ({err}); restore it from the model's release") from None
    if not isinstance(value, dict):
        raise StageError(f"{path} holds a JSON {type(value).__name__}, not an object of settings; restore it "
                         f"from the model's release")
    return value


def check_weights_folder(weights: Path, fam: Family) -> None:
    """Stops with a plain message when `weights` is not a usable diffusers folder for `fam`."""
    if not weights.exists():
        raise StageError(f"WEIGHTS={weights}: no such folder; give a diffusers folder "
                         f"(as save_pretrained writes it), or WEIGHTS=tiny or WEIGHTS=random")
    if not weights.is_dir():
        raise StageError(f"WEIGHTS={weights} is a file; give a diffusers folder (unet/, vae/, text_encoder/, "
                         f"tokenizer/, scheduler/ with safetensors weights)")
    index = weights / "model_index.json"
    if index.is_file():
        pipeline = read_config(index).get("_class_name")
        if pipeline != fam.pipeline_class and pipeline in OTHER_PIPELINES:
            raise StageError(f"WEIGHTS={weights} holds a {OTHER_PIPELINES[pipeline]} model ({pipeline} in "
                             f"model_index.json); `make {fam.name}` builds {fam.pipeline_class} folders"
                             + (" (SDXL is not buildable yet)" if "SDXL" in OTHER_PIPELINES[pipeline] else ""))
    needed = [s.folder for s in fam.submodules if s.folder] + list(fam.tokenizer_folders) + ["scheduler"]
    missing = [f for f in needed if not (weights / f).is_dir()]
    if missing:
        raise StageError(f"WEIGHTS={weights} lacks the folder(s) {', '.join(missing)}; a {fam.name} diffusers "
                         f"folder has {', '.join(needed)}")


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of one diffusers submodule folder: a single file or an indexed set of shards."""
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        names = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        return [folder / n for n in names]
    files = sorted(p for p in folder.glob("*.safetensors") if ".fp16." not in p.name)
    if not files:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StageError(f"{folder} has no .safetensors weights (pickled .bin weights are not read; convert "
                         f"them with diffusers' save_pretrained(safe_serialization=True))")
    return files

"""Model families, the one table: which submodules each has, where their weights live in a diffusers folder,
which source tensors are left out on purpose, its schedulers and defaults, and the configurations of the
generated `tiny` and `random` models.

Everything else reads it: make (through `python3 stages/lib/models.py --make`, which writes the variables the
Makefile includes), the stages, the manifest (and through it the runtimes), the reference and the tests. A family
is data; the code that traces a submodule of each kind lives in `stages/lib/submodules/<kind>.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .cli import StageError


@dataclass(frozen=True)
class Submodule:
    name: str
    # What it is, which picks the tracing code (stages/lib/submodules/<kind>.py): text_encoder, unet, vae, sched.
    kind: str
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
    # A text encoder's tokenizer folder; its hidden layer (-1: the last, -2: the penultimate, as SDXL reads it)
    # and whether it also returns the pooled, projected embedding.
    tokenizer: str | None = None
    hidden_layer: int = -1
    pooled: bool = False
    # A prefix the released checkpoints put before the names the model class uses now: transformers 5's
    # CLIPTextModel is the text transformer itself ("embeddings...."), checkpoints saved by transformers 4 (SD 1.5,
    # SDXL's text_encoder) say "text_model.embeddings....". Both spellings are read.
    checkpoint_prefix: str = ""

    def parameter_name(self, key: str) -> str:
        """A checkpoint tensor's name as the traced model calls it."""
        return key.removeprefix(self.checkpoint_prefix) if self.checkpoint_prefix else key

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
    pipeline_class: str
    # Runtime names of the schedulers it offers (stages/lib/schedulers.py), the default first.
    schedulers: tuple[str, ...]
    # An empty negative prompt gives zero text embeddings (diffusers' force_zeros_for_empty_prompt, which SDXL
    # sets) rather than the encoding of "".
    zero_empty_negative: bool = False
    # Configurations for WEIGHTS=tiny (small, same architecture) and WEIGHTS=random (full size), and the dtype
    # each is generated in where not float32.
    generated_configs: dict = field(default_factory=dict)
    generated_dtypes: dict = field(default_factory=dict)

    @property
    def tokenizer_folders(self) -> tuple[str, ...]:
        return tuple(s.tokenizer for s in self.text_encoders)

    @property
    def text_encoders(self) -> tuple[Submodule, ...]:
        return tuple(s for s in self.submodules if s.kind == "text_encoder")

    @property
    def unet(self) -> Submodule:
        (unet,) = [s for s in self.submodules if s.kind == "unet"]
        return unet

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

_POSITION_IDS = ("text_model.embeddings.position_ids",)
_VAE_ENCODER = ("encoder.", "quant_conv.")

SD15 = Family(
    name="sd15",
    wasm_name="stable_diffusion_webgpu.wasm",
    submodules=(
        Submodule("clip", "text_encoder", "text_encoder", unused_prefixes=_POSITION_IDS, float16=True,
                  tokenizer="tokenizer", checkpoint_prefix="text_model."),
        Submodule("unet", "unet", "unet", float16=True),
        Submodule("vae", "vae", "vae", unused_prefixes=_VAE_ENCODER, float16=True),
        Submodule("sched", "sched", None, config_from="unet"),
    ),
    pipeline_class="StableDiffusionPipeline",
    schedulers=("dpm", "euler", "pndm"),
    generated_configs={
        "tiny": dict(unet=_TINY_UNET, vae=_TINY_VAE, clip=_TINY_CLIP, scheduler=_SD15_SCHEDULER),
        "random": dict(unet=_SD15_UNET, vae=_SD15_VAE, clip=_SD15_CLIP, scheduler=_SD15_SCHEDULER),
    },
)

# SDXL base 1.0 as released (stabilityai/stable-diffusion-xl-base-1.0).
_SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
# Same architecture as SD 1.5's; the latent scale differs. In float16 its activations overflow (NaN, black
# images), so it computes in float32 only (float16=False below; its weights are still stored as float16).
_SDXL_VAE = dict(_SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
_SDXL_CLIP = dict(_SD15_CLIP, pad_token_id=1)
# OpenCLIP ViT-bigG/14 with its projection.
_SDXL_CLIP2 = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
    pad_token_id=1,
)
_SDXL_SCHEDULER = dict(
    _class_name="EulerDiscreteScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", interpolation_type="linear", prediction_type="epsilon", sample_max_value=1.0,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", trained_betas=None,
    use_karras_sigmas=False,
)
# Tiny: two UNet levels, the added time/text conditions at their real structure; the two text encoders' widths
# add up to the UNet's cross-attention width (32 + 32), the pooled width plus six 8-wide time embeddings make
# the added-condition input (32 + 6 * 8).
_TINY_XL_UNET = dict(
    _SDXL_UNET, sample_size=16, layers_per_block=1, block_out_channels=[32, 64],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2], attention_head_dim=[2, 4], cross_attention_dim=64,
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, norm_num_groups=8,
)
_TINY_XL_VAE = dict(_TINY_VAE, scaling_factor=0.13025, force_upcast=True)
_TINY_XL_CLIP = dict(_TINY_CLIP, hidden_size=32, projection_dim=32)
_TINY_XL_CLIP2 = dict(_SDXL_CLIP2, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=32)

SDXL = Family(
    name="sdxl",
    wasm_name="stable_diffusion_xl.wasm",
    submodules=(
        Submodule("clip", "text_encoder", "text_encoder", unused_prefixes=_POSITION_IDS, float16=True,
                  tokenizer="tokenizer", hidden_layer=-2, checkpoint_prefix="text_model."),
        Submodule("clip2", "text_encoder", "text_encoder_2", unused_prefixes=_POSITION_IDS, float16=True,
                  tokenizer="tokenizer_2", hidden_layer=-2, pooled=True),
        Submodule("unet", "unet", "unet", float16=True),
        Submodule("vae", "vae", "vae", unused_prefixes=_VAE_ENCODER),
        Submodule("sched", "sched", None, config_from="unet"),
    ),
    pipeline_class="StableDiffusionXLPipeline",
    schedulers=("euler", "dpm"),
    zero_empty_negative=True,
    generated_configs={
        "tiny": dict(unet=_TINY_XL_UNET, vae=_TINY_XL_VAE, clip=_TINY_XL_CLIP, clip2=_TINY_XL_CLIP2,
                     scheduler=_SDXL_SCHEDULER),
        "random": dict(unet=_SDXL_UNET, vae=_SDXL_VAE, clip=_SDXL_CLIP, clip2=_SDXL_CLIP2, scheduler=_SDXL_SCHEDULER),
    },
    # Full size in float16, as SDXL's releases also ship it (their fp16 variant): 7 GB on disk, not 14, and the
    # generation fits this project's 24 GB build machine.
    generated_dtypes={"random": "float16"},
)

FAMILIES = {f.name: f for f in (SD15, SDXL)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise StageError(f"unknown model {name!r}; known models: {', '.join(FAMILIES)}") from None


# Pipelines of models no family here builds, which a diffusers folder may hold (its model_index.json says which),
# so that one is named in the refusal instead of failing somewhere inside a stage.
OTHER_PIPELINES = {
    "StableDiffusionXLImg2ImgPipeline": "SDXL refiner",
    "StableDiffusion3Pipeline": "Stable Diffusion 3",
    "FluxPipeline": "FLUX",
    "StableDiffusionUpscalePipeline": "SD x4 upscaler",
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
        if weights.suffix in (".safetensors", ".ckpt", ".pt", ".pth"):
            # diffusers' from_single_file needs the model's diffusers configs and tokenizers, which it downloads.
            raise StageError(f"WEIGHTS={weights} is a single-file checkpoint, which cannot be read without the "
                             f"model's diffusers configs and tokenizers; convert it where those are at hand "
                             f"(diffusers: {fam.pipeline_class}.from_single_file(path).save_pretrained(folder)) "
                             f"and give WEIGHTS=folder")
        raise StageError(f"WEIGHTS={weights} is a file; give a diffusers folder (unet/, vae/, text_encoder/, "
                         f"tokenizer/, scheduler/ with safetensors weights)")
    index = weights / "model_index.json"
    if index.is_file():
        pipeline = read_config(index).get("_class_name")
        builds = {f.pipeline_class: f for f in FAMILIES.values()}
        if pipeline in builds and builds[pipeline] is not fam:
            other = builds[pipeline]
            raise StageError(f"WEIGHTS={weights} holds a {other.name} model ({pipeline} in model_index.json), not "
                             f"{fam.name}; build it with `make {other.name} WEIGHTS={weights}`")
        if pipeline in OTHER_PIPELINES:
            raise StageError(f"WEIGHTS={weights} holds a {OTHER_PIPELINES[pipeline]} model ({pipeline} in "
                             f"model_index.json), which this project does not build; `make {fam.name}` takes "
                             f"{fam.pipeline_class} folders")
    needed = [s.folder for s in fam.submodules if s.folder] + list(fam.tokenizer_folders) + ["scheduler"]
    missing = [f for f in needed if not (weights / f).is_dir()]
    if missing:
        raise StageError(f"WEIGHTS={weights} lacks the folder(s) {', '.join(missing)}; a {fam.name} diffusers "
                         f"folder has {', '.join(needed)}")
    # What needs no model built to find wrong is found here, before any stage starts (make runs this check when
    # it reads the Makefile): an unreadable settings file, or weights only in pickled form.
    for folder in dict.fromkeys(s.folder for s in fam.submodules if s.folder):  # the scheduler functions read unet/
        read_config(weights / folder / "config.json")
        safetensors_files(weights / folder)
    read_config(weights / "scheduler" / "scheduler_config.json")


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

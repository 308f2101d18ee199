"""The compiled CPU libraries against the PyTorch modules they were traced from, and the whole pipeline
against diffusers, on the tiny SD 1.5 model that conftest builds once per session.

    .venv/bin/python -m pytest tests/python/test_build_parity.py -q

Submodules: each library's `<variant>/<library>/lib.cpu.v1.so` with its submodule's tensor cache `params.v1/`
(loaded as stages/lib/cpu_pipeline.py loads them) gets random inputs from fixed seeds, and so does the PyTorch
module with the weights of the generated diffusers folder `<variant>/weights/` rounded as the cache stores them
(float16; conftest.stored_weights), so both sides compute with the same values and the comparison is of the
compiled code alone: float32 libraries' outputs must agree to a relative error (||ours - ref|| / ||ref||) of
1e-4. The VAE's packed RGBA is compared byte by byte and with the float image before rounding.

Float16 libraries (`<sub>-f16`) are held to what float16 costs: their error against the float32 module may be
at most twice that of the same PyTorch module run in float16 (`module.half()`) on the same inputs. Measured:
CLIP 6.0e-4 (PyTorch float16: about the same), UNet 1.3e-2 / 1.5e-3 / 1.5e-2 (PyTorch 1.2e-2 / 1.1e-3 /
1.3e-2; classifier-free guidance multiplies the error by the guidance scale), VAE within 2 grey levels of the
float image.

Pipeline: CompiledPipeline.generate against reference.generate (diffusers) with the full-precision weights, for
each scheduler: what a user gets against the original model, float16 storage included; and `make reference`
end to end.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from conftest import Compiled, relative_error, stored_weights
from lib.models import FAMILIES, family

TOLERANCE = 1e-4
# A float16 library's error may be this many times PyTorch's own float16 error on the same inputs.
FLOAT16_ERROR_RATIO = 2.0
COMPUTES = ["float32", "float16"]
PROMPTS = ("blurry, low quality, watermark", "a photo of an astronaut riding a horse on the moon")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, order="C"))


def check_error(ours, ref, compute: str, run_in_float16, what) -> None:
    """float32: within TOLERANCE of PyTorch; float16: within FLOAT16_ERROR_RATIO times the error of PyTorch's own
    float16 run (`run_in_float16()`, its output as float32 numpy)."""
    error = relative_error(ours, ref)
    if compute == "float32":
        assert error <= TOLERANCE, (what, error)
        return
    # It does compute in float16: further from the float32 module than any float32 library may be.
    assert error > TOLERANCE, (what, error)
    torch_error = relative_error(run_in_float16(), ref)
    assert 0 < torch_error < 0.1, (what, torch_error)  # float16 rounds, and not absurdly
    assert error <= FLOAT16_ERROR_RATIO * torch_error, (what, error, torch_error)


def half(module):
    import copy

    return copy.deepcopy(module).half()


# (family, compute) of every library that is built: SDXL's VAE computes in float32 only.
FAMILY_COMPUTES = [(f, c) for f in FAMILIES for c in COMPUTES]


def library_of(fam: str, sub: str, compute: str) -> str | None:
    """The library `sub` runs in `compute`, or None where the family builds none (SDXL's VAE in float16)."""
    from lib.cli import library_name

    return library_name(sub, compute) if compute in family(fam).submodule(sub).computes else None


@pytest.mark.parametrize("compute", COMPUTES)
def test_tensor_caches_match_the_compiled_functions(tiny_build, compute):
    """The weights a compiled function takes after its inputs are the cache's records, in order, by name, in the
    library's dtype (float32, or float16 in a float16 library, whatever the shards store); where the library
    has a load-time transform (Winograd weights: unet, vae), what it returns is what the function takes."""
    from lib.cli import library_name

    for sub in ("clip", "unet", "vae"):
        compiled = Compiled(tiny_build.variant, library_name(sub, compute))
        assert compiled.meta["compute"] == compute
        (function, fmeta), = [(n, m) for n, m in compiled.meta["functions"].items() if m["params"]]
        assert compiled.cache_meta["function"] == function
        assert compiled.cache_meta["submodule"] == sub
        assert len(compiled.stored) == len(fmeta["params"]) > 0
        for tensor, spec in zip(compiled.stored, fmeta["params"]):
            # (a float16 library keeps weights with an odd number of elements float32: WebGPU uploads 4-byte words)
            odd = int(np.prod(spec["shape"])) % 2 == 1
            assert list(tensor.shape) == spec["shape"] and str(tensor.dtype) == spec["dtype"], spec
            assert spec["dtype"] == ("float32" if odd else compute), spec
        # float16 libraries also cast, at load time, the weights that float32 ops take (norm scales and
        # shifts, CLIP's token embedding, which `take` gathers in float32).
        prepares = sub in ("unet", "vae") or compute == "float16"
        assert fmeta["prepare"] == (f"{function}_prepare" if prepares else None)
        assert len(compiled.params) == len(fmeta["prepared_params"])
        for tensor, spec in zip(compiled.params, fmeta["prepared_params"]):
            assert list(tensor.shape) == spec["shape"] and str(tensor.dtype) == spec["dtype"], spec
        # Stored as float16 (the default); param_dtypes records the float32 library's.
        assert compiled.cache_meta["param_dtypes"] == ["float32"] * len(fmeta["params"])
        assert compiled.cache_meta["storage_dtype"] == "float16"


@pytest.mark.parametrize("fam,compute", FAMILY_COMPUTES)
def test_text_encoders(tiny_build, fam, compute):
    """Each text encoder's compiled function against the PyTorch wrapper it was traced from, on real prompts and
    random ids, with both rows kept and with the negative row zeroed (keep). The wrapper's outputs are checked
    against transformers' own first: SD 1.5 reads the last hidden state; SDXL the penultimate one, and its second
    encoder's pooled embedding is transformers' text_embeds (the wrapper pools by mask, not argmax)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lib.submodules.text_encoder import TextEncoder

    build = tiny_build.of(fam)
    rng = np.random.default_rng(1)
    for sub in family(fam).text_encoders:
        compiled = Compiled(build.variant, library_of(fam, sub.name, compute))
        model_class = CLIPTextModelWithProjection if sub.pooled else CLIPTextModel
        model = stored_weights(model_class.from_pretrained(build.weights / sub.folder).eval(), compiled.cache_meta)
        wrapper = TextEncoder(model, sub.hidden_layer, sub.pooled).eval()
        wrapper16 = half(wrapper) if compute == "float16" else None
        tokenizer = CLIPTokenizer.from_pretrained(build.weights / sub.tokenizer)
        prompts = tokenizer(list(PROMPTS), padding="max_length", max_length=77, truncation=True,
                            return_tensors="np").input_ids.astype(np.int32)
        random_ids = rng.integers(0, model.config.vocab_size - 1, size=(2, 77), dtype=np.int32)
        random_ids[:, 40] = model.config.vocab_size - 1  # an end-of-text token, where pooling reads
        for ids, keep in ((prompts, [1, 1]), (random_ids, [1, 1]), (prompts, [0, 1])):
            assert ids.shape == (2, 77) and (ids[0] != ids[1]).any()
            keep = np.array(keep, np.float32)
            with torch.no_grad():
                ref = wrapper(as_tensor(ids), as_tensor(keep))
                own = model(as_tensor(ids).long(), output_hidden_states=True)
            ref = ref if isinstance(ref, tuple) else (ref,)
            hidden = own.last_hidden_state if sub.hidden_layer == -1 else own.hidden_states[sub.hidden_layer]
            assert torch.equal(ref[0][keep == 1], hidden[keep == 1]) and not ref[0][keep == 0].any()
            if sub.pooled:
                assert torch.allclose(ref[1][keep == 1], own.text_embeds[keep == 1], atol=1e-6)
            ours = compiled(sub.name, ids, keep)
            ours = ours if isinstance(ours, tuple) else (ours,)
            assert len(ours) == len(ref)
            for i, (o, r) in enumerate(zip(ours, ref)):
                def in_float16(i=i):
                    with torch.no_grad():
                        out = wrapper16(as_tensor(ids), as_tensor(keep).half())
                    return (out if isinstance(out, tuple) else (out,))[i].float().numpy()

                check_error(o, r.numpy(), compute, in_float16, (fam, sub.name, i))


@pytest.mark.parametrize("fam,compute", FAMILY_COMPUTES)
def test_unet(tiny_build, fam, compute):
    """The guided UNet, with every input the compiled function takes (SDXL: both encoders' embeddings, the pooled
    embedding and the time ids) random from its recorded shape."""
    from diffusers import UNet2DConditionModel

    from lib.submodules.unet import GuidedUNet

    build = tiny_build.of(fam)
    compiled = Compiled(build.variant, library_of(fam, "unet", compute))
    unet = stored_weights(UNet2DConditionModel.from_pretrained(build.weights / "unet").eval(), compiled.cache_meta)
    wrapper = GuidedUNet(unet, len(family(fam).text_encoders)).eval()
    wrapper16 = half(wrapper) if compute == "float16" else None
    specs = compiled.meta["functions"]["unet"]["inputs"]
    rng = np.random.default_rng(2)
    # Integer, fractional (Euler) and small timesteps; guidance 1 is the conditional prediction alone.
    for timestep, guidance in ((981.0, 7.5), (500.25, 1.0), (1.0, 12.0)):
        named = {spec["name"]: rng.standard_normal(spec["shape"], dtype=np.float32) for spec in specs}
        named["timestep"], named["guidance"] = np.array(timestep, np.float32), np.array(guidance, np.float32)
        if "time_ids" in named:  # sizes as the pipeline gives them, each row alike
            named["time_ids"] = np.array([[128, 128, 0, 0, 128, 128]] * 2, np.float32)
        arrays = [named[spec["name"]] for spec in specs]
        inputs = [as_tensor(x) for x in arrays]
        with torch.no_grad():
            ref = wrapper(*inputs).numpy()
        ours = compiled("unet", *arrays)
        assert ours.shape == ref.shape == named["latents"].shape
        assert ref.std() > 0.01

        def in_float16():
            with torch.no_grad():
                return wrapper16(*(x.half() for x in inputs)).float().numpy()

        check_error(ours, ref, compute, in_float16, (fam, timestep, guidance))


@pytest.mark.parametrize("fam,compute", [(f, c) for f, c in FAMILY_COMPUTES if library_of(f, "vae", c)])
def test_vae(tiny_build, fam, compute):
    """float32: packed RGBA with the same bytes as the torch wrapper but for a tiny fraction off by one where
    the float sits on a rounding edge; and every channel within 0.5 (+ float error) of the float image before
    rounding. float16: within 3 grey levels of the float image, and at most 2% of channels more than 1 away
    (measured: at most 2.0, and 0.5%)."""
    from diffusers import AutoencoderKL

    from lib.submodules.vae import DecodeToRGBA

    build = tiny_build.of(fam)
    compiled = Compiled(build.variant, library_of(fam, "vae", compute))
    vae = stored_weights(AutoencoderKL.from_pretrained(build.weights / "vae").eval(), compiled.cache_meta)
    wrapper = DecodeToRGBA(vae).eval()
    rng = np.random.default_rng(3)
    for scale in (1.0, 3.0):  # latents as the denoiser leaves them, and wider ones that clamp more pixels
        latents = (scale * rng.standard_normal((1, 4, 16, 16))).astype(np.float32)
        with torch.no_grad():
            ref = wrapper(as_tensor(latents)).numpy()
            image = wrapper.decoder(wrapper.post_quant_conv(as_tensor(latents) / wrapper.scaling_factor))[0]
            exact = ((image / 2 + 0.5).clamp(0, 1) * 255).numpy().transpose(1, 2, 0)  # before rounding
        ours = compiled("vae", latents)
        assert ours.shape == ref.shape == (128, 128)
        ours_rgba = ours.view(np.uint32).view(np.uint8).reshape(128, 128, 4)
        ref_rgba = ref.view(np.uint32).view(np.uint8).reshape(128, 128, 4)
        assert (ours_rgba[..., 3] == 255).all()
        # The image is a picture, not a flat or saturated field.
        assert ref_rgba[..., :3].std() > 10 and ((exact > 0) & (exact < 255)).mean() > 0.5
        if compute == "float16":
            off = np.abs(ours_rgba[..., :3] - exact)
            assert off.max() <= 3 and (off > 1).mean() <= 0.02, (off.max(), (off > 1).mean())
            continue
        diff = np.abs(ours_rgba.astype(int) - ref_rgba.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert np.abs(ours_rgba[..., :3] - exact).max() <= 0.5 + 0.01


@pytest.mark.parametrize("terms", [1, 2, 3, 4, 5])
def test_sched_lincomb(tiny_build, terms):
    from lib.submodules.sched import LinComb

    compiled = Compiled(tiny_build.variant, "sched")
    shape = tuple(compiled.meta["functions"][f"lincomb{terms}"]["inputs"][1]["shape"])
    rng = np.random.default_rng(10 + terms)
    coeffs = rng.standard_normal(terms).astype(np.float32)
    tensors = [rng.standard_normal(shape, dtype=np.float32) for _ in range(terms)]
    with torch.no_grad():
        ref = LinComb()(as_tensor(coeffs), *map(as_tensor, tensors)).numpy()
    ours = compiled(f"lincomb{terms}", coeffs, *tensors)
    assert relative_error(ours, ref) <= TOLERANCE


# ---- the whole pipeline ------------------------------------------------------------------------------------


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def compiled_pipelines(tiny_build):
    """{family: its CompiledPipeline}, made on first use."""
    from lib.cpu_pipeline import load_pipeline

    pipes = {}

    def get(fam: str):
        if fam not in pipes:
            build = tiny_build.of(fam)
            pipes[fam] = load_pipeline(build.variant, build.weights)
        return pipes[fam]

    return get


@pytest.fixture(scope="module")
def compiled_pipeline(compiled_pipelines):
    return compiled_pipelines("sd15")


# Every family with each of its schedulers, and with its default scheduler and no negative prompt.
PIPELINE_CASES = ([(f, s, PROMPTS[0]) for f in FAMILIES for s in family(f).schedulers]
                  + [(f, family(f).schedulers[0], "") for f in FAMILIES])


@pytest.mark.parametrize("fam,scheduler,negative", PIPELINE_CASES)
def test_pipeline_matches_diffusers(tiny_build, compiled_pipelines, fam, scheduler, negative):
    """Every family and scheduler, with a negative prompt and without one (SDXL: zero embeddings, as diffusers
    does for an empty negative prompt)."""
    import reference

    build = tiny_build.of(fam)
    settings = dict(negative=negative, seed=1234, steps=5, scheduler=scheduler, guidance=7.5)
    ours = compiled_pipelines(fam).generate(PROMPTS[1], **settings)
    ref = reference.generate(build.weights, prompt=PROMPTS[1], model=fam, **settings)
    assert ours.shape == (128, 128, 4) and ref.shape == (128, 128, 3)
    assert (ours[..., 3] == 255).all()
    assert ref.std() > 10, "diffusers made a flat image: the comparison would prove nothing"
    assert ours[..., :3].std() > 10
    # Measured with float16 shards: 64 dB, channels at most 1 apart, for every scheduler and both families
    # (with float32 shards: 88 dB to identical). The bounds, set before weights were stored as float16, keep a
    # wide margin.
    assert psnr(ours[..., :3], ref) >= 40
    assert np.abs(ours[..., :3].astype(int) - ref.astype(int)).max() <= 3


def test_pipeline_depends_on_its_inputs(compiled_pipeline):
    """Prompt, seed, scheduler and guidance each change the image by more than the parity tolerance, so a
    pipeline that dropped one of them could not pass the comparison with diffusers above."""
    base = dict(negative="", seed=0, steps=4, scheduler="dpm", guidance=7.5)
    image = compiled_pipeline.generate("a red apple", **base)
    for change in (dict(seed=1), dict(scheduler="euler"), dict(guidance=1.0)):
        other = compiled_pipeline.generate("a red apple", **{**base, **change})
        assert psnr(image, other) < 45, change
    assert psnr(image, compiled_pipeline.generate("a blue car", **base)) < 45, "the prompt changed nothing"


def test_make_reference_writes_png_with_settings(tiny_build, tmp_path):
    from PIL import Image

    import reference

    out = tmp_path / "out" / "ref.png"
    settings = dict(PROMPT=PROMPTS[1], NEGATIVE=PROMPTS[0], SEED=77, STEPS=3, SCHEDULER="euler", GUIDANCE=5.5)
    result = tiny_build.make("reference", OUT=out, **settings)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (128, 128)
        text = dict(png.text)
        pixels = np.asarray(png.convert("RGB"))
    assert text == {"prompt": PROMPTS[1], "negative_prompt": PROMPTS[0], "seed": "77", "steps": "3",
                    "scheduler": "euler", "guidance": "5.5", "model": "sd15"}
    # The pixels are that generation's, not some other: diffusers in this process, same settings.
    again = reference.generate(tiny_build.weights, prompt=PROMPTS[1], negative=PROMPTS[0], seed=77, steps=3,
                               scheduler="euler", guidance=5.5, model="sd15")
    assert pixels.std() > 10
    assert np.abs(pixels.astype(int) - again.astype(int)).max() <= 1
    assert not list(out.parent.glob(".*")), "a temporary file was left beside the PNG"

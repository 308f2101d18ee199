"""PyTorch on the same GPU, with the same weights and inputs as the WebGPU benchmark: its timing reference and
its correctness check.

    python bench/torch_reference.py --variant artifacts/sd15-random --check CHECK_DIR [--json out.json]
        [--iters 50] [--blocks 3] [--device cuda]

The models are built from the variant's configs (weights/*/config.json; no weight files needed) and filled with
the seeded checkpoint tensors bench/webgpu_sd.mjs --seeded-weights made (bench/seeded_weights.py, the twin).
From what `webgpu_sd.mjs --check CHECK_DIR` wrote, it reports:
- unet_rel_l2_err_vs_torch_fp32: WebGPU's UNet call (the float32 libraries) against PyTorch fp32 on the same
  inputs (TF32 off: plain fp32, as WebGPU computes); at most 1e-3 to pass;
- float16_unet_rel_l2_err_vs_torch_fp32 beside torch_fp16_unet_rel_l2_err_vs_torch_fp32: the float16
  libraries' error and PyTorch fp16's own; at most twice PyTorch's to pass;
- subgroup_matrix_unet_rel_l2_err_vs_torch_fp32: the same for the float16 libraries with their tensor-core
  (subgroup-matrix) kernels, where a run used them (webgpu_sd.mjs --compute subgroup-matrix);
- image_psnr_vs_torch_db (and float16_..., subgroup_matrix_...): WebGPU's first generated image against diffusers' pipeline in fp32
  on this GPU, with the same weights, noise, scheduler and steps; at least 30 dB to pass.
Then the per-call time of the same UNet function (the project's guided UNet: batch 2 inside, the guidance
combination) in fp16 and fp32 eager, in alternating blocks: eager fp16 is bound by the host launching ~1000
kernels per call and moves with the host's speed and load, so the JSON keeps every block's median too.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))
from seeded_weights import seeded_tensor  # noqa: E402  (beside this file)

from lib import diffusers_reference  # noqa: E402
from lib.models import family  # noqa: E402
from lib.submodules.unet import GuidedUNet  # noqa: E402

UNET_TOLERANCE = 1e-3
FLOAT16_FACTOR = 2.0
MIN_PSNR_DB = 30.0


def seeded_model(sub, folder: Path, device):
    """The submodule's diffusers/transformers model from `folder`'s config, every parameter seeded by name."""
    import diffusers
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        if sub.kind == "unet":
            model = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(folder))
        elif sub.kind == "vae":
            model = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder))
        else:
            model = (CLIPTextModelWithProjection if sub.pooled else CLIPTextModel)(CLIPTextConfig.from_pretrained(folder))
    for key, param in list(model.named_parameters()):
        value = seeded_tensor(sub.parameter_name(key), list(param.shape), device=device)
        set_module_tensor_to_device(model, key, device, value=value)
    return model.to(device).float().eval()


def rel_l2(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def time_calls(fn, iters: int, device) -> list[float]:
    """Per-call milliseconds of `iters` calls after 5 warm-up calls (CUDA events; wall clock on the CPU)."""
    import time

    times = []
    with torch.no_grad():
        for i in range(iters + 5):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                fn()
                ms = (time.perf_counter() - t0) * 1e3
            if i >= 5:
                times.append(ms)
    return times


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# What each WebGPU run wrote (unet-<compute>.f32, check-<compute>.json) and its fields' prefix.
COMPUTES = (("float32", ""), ("float16", "float16_"), ("subgroup-matrix", "subgroup_matrix_"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", type=Path, required=True, help="the built variant (model.json, weights/ configs)")
    parser.add_argument("--check", type=Path, required=True, help="what webgpu_sd.mjs --check wrote")
    parser.add_argument("--iters", type=int, default=50, help="timed calls per block (0: no timing)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating fp16 / fp32 blocks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    manifest = json.loads((args.variant / "model.json").read_text())
    fam = family(manifest["family"])
    weights = args.variant / "weights"
    models = {sub.folder: seeded_model(sub, weights / sub.folder, device) for sub in fam.submodules if sub.folder}
    result = {"gpu": torch.cuda.get_device_name() if device.type == "cuda" else host_cpu(), "host_cpu": host_cpu(),
              "torch": torch.__version__, "family": fam.name, "weights": "seeded (bench/seeded_weights.py)"}

    # One UNet call on the inputs WebGPU took.
    specs = manifest["submodules"]["unet"]["libraries"]["float32"]["functions"]["unet"]["inputs"]
    inputs = [torch.from_numpy(np.fromfile(args.check / f"unet-in{i}.f32", np.float32).reshape(s["shape"])).to(device)
              for i, s in enumerate(specs)]
    guided = {"fp32": GuidedUNet(models["unet"], len(fam.text_encoders)),
              "fp16": GuidedUNet(copy.deepcopy(models["unet"]).half(), len(fam.text_encoders))}
    with torch.no_grad():
        out32 = guided["fp32"](*inputs).float().cpu().numpy()
        out16 = guided["fp16"](*[x.half() for x in inputs]).float().cpu().numpy()
    result["torch_fp16_unet_rel_l2_err_vs_torch_fp32"] = rel_l2(out16, out32)
    checks = {}
    for compute, prefix in COMPUTES:
        path = args.check / f"unet-{compute}.f32"
        if path.exists():
            err = rel_l2(np.fromfile(path, np.float32).reshape(out32.shape), out32)
            result[f"{prefix}unet_rel_l2_err_vs_torch_fp32"] = err
            bound = UNET_TOLERANCE if compute == "float32" else FLOAT16_FACTOR * result["torch_fp16_unet_rel_l2_err_vs_torch_fp32"]
            checks[f"{prefix}unet"] = err <= bound

    # The whole generation, in diffusers on this device, against each image WebGPU made.
    from PIL import Image

    pipe = diffusers_reference.from_parts(fam, models, weights).to(device)
    for compute, prefix in COMPUTES:
        settings_path = args.check / f"check-{compute}.json"
        if not settings_path.exists():
            continue
        s = json.loads(settings_path.read_text())
        ref = diffusers_reference.generate(pipe, fam, prompt=s["prompt"], negative=s["negative"], seed=s["seed"],
                                           steps=s["steps"], scheduler=s["scheduler"], guidance=s["guidance"])
        Image.fromarray(ref).save(args.check / f"torch-image-{compute}.png")
        with Image.open(args.check / f"image-{compute}.png") as png:
            ours = np.asarray(png.convert("RGB"))
        result[f"{prefix}image_psnr_vs_torch_db"] = psnr(ours, ref)
        result[f"{prefix}image_settings"] = s
        result["torch_image_std"] = float(ref.std())  # a flat image would make the comparison prove little
        checks[f"{prefix}image"] = result[f"{prefix}image_psnr_vs_torch_db"] >= MIN_PSNR_DB
    result["checks_pass"] = checks
    print("torch check: " + ", ".join(f"{k} {v:.3g}" for k, v in result.items() if isinstance(v, float))
          + f"; pass {checks}")

    if args.iters:
        calls, blocks = {"fp16": [], "fp32": []}, {"fp16": [], "fp32": []}
        half_inputs = [x.half() for x in inputs]
        for _ in range(args.blocks):
            for name in calls:
                xs = half_inputs if name == "fp16" else inputs
                times = time_calls(lambda: guided[name](*xs), args.iters, device)
                calls[name] += times
                blocks[name].append(round(statistics.median(times), 2))
        result.update({"unet_fp16_ms": statistics.median(calls["fp16"]), "unet_fp32_ms": statistics.median(calls["fp32"]),
                       "unet_fp16_block_medians_ms": blocks["fp16"], "unet_fp32_block_medians_ms": blocks["fp32"],
                       "params": sum(p.numel() for p in models["unet"].parameters())})
        print(f"torch {result['gpu']} (host {result['host_cpu']}): UNet per call fp16 {result['unet_fp16_ms']:.1f} ms "
              f"(blocks {blocks['fp16']}), fp32 {result['unet_fp32_ms']:.1f} ms (blocks {blocks['fp32']}); "
              f"median of {args.blocks} x {args.iters} calls")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""PyTorch reference timing of the SD 1.5 UNet on the same GPU: diffusers' UNet2DConditionModel with SD 1.5's
config and random weights, batch 2 (classifier-free guidance), 64 x 64 latents, SDPA attention.

    python bench/torch_unet.py [--iters 50] [--json out.json]

Prints the median per-call time for fp16 and fp32 (TF32 off: plain fp32, as WebGPU computes) in eager mode.
"""

from __future__ import annotations

import argparse
import json
import statistics

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))


def time_unet(unet, dtype, iters: int) -> float:
    device = "cuda"
    unet = unet.to(device=device, dtype=dtype)
    latents = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    text = torch.randn(2, 77, 768, device=device, dtype=dtype)
    timestep = torch.tensor(500.0, device=device)
    times = []
    with torch.no_grad():
        for i in range(iters + 5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            unet(latents, timestep, text, return_dict=False)
            end.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    from diffusers import UNet2DConditionModel

    from lib.models import SD15

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15.generated_configs["random"]["unet"]).eval()  # SD 1.5's own config
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "unet_fp16_ms": time_unet(unet, torch.float16, args.iters),
        "unet_fp32_ms": time_unet(unet, torch.float32, args.iters),
        "params": sum(p.numel() for p in unet.parameters()),
    }
    print(f"torch {result['gpu']}: UNet batch 2 64x64: fp16 {result['unet_fp16_ms']:.1f} ms, "
          f"fp32 {result['unet_fp32_ms']:.1f} ms (median of {args.iters})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()

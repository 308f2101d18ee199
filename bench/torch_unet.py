"""PyTorch reference timing of the SD 1.5 UNet on the same GPU: diffusers' UNet2DConditionModel with SD 1.5's
config and random weights, batch 2 (classifier-free guidance), 64 x 64 latents, SDPA attention.

    python bench/torch_unet.py [--iters 50] [--json out.json]

Prints the median per-call time for fp16 and fp32 (TF32 off: plain fp32, as WebGPU computes) in eager mode.
Eager fp16 is bound by the host launching ~1000 kernels per call, so it moves with the host's speed and load
(26-62 ms seen on the same H100 type): the two precisions are timed in alternating blocks (--blocks) and the
JSON keeps every block's median besides the median of all calls, and the host CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stages"))


def time_unet(unet, dtype, iters: int) -> list[float]:
    """Per-call milliseconds of `iters` calls after 5 warm-up calls."""
    device = "cuda"
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
    return times


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    from diffusers import UNet2DConditionModel

    from lib.models import SD15

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=50, help="timed calls per block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating fp16 / fp32 blocks")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15.generated_configs["random"]["unet"]).eval()  # SD 1.5's own config
    params = sum(p.numel() for p in unet.parameters())
    models = {"fp16": unet.half().cuda(), "fp32": UNet2DConditionModel(**SD15.generated_configs["random"]["unet"])
              .eval().float().cuda()}
    calls = {name: [] for name in models}
    blocks = {name: [] for name in models}
    for _ in range(args.blocks):
        for name, model in models.items():
            times = time_unet(model, next(model.parameters()).dtype, args.iters)
            calls[name] += times
            blocks[name].append(round(statistics.median(times), 2))
    result = {
        "gpu": torch.cuda.get_device_name(),
        "host_cpu": host_cpu(),
        "torch": torch.__version__,
        "unet_fp16_ms": statistics.median(calls["fp16"]),
        "unet_fp32_ms": statistics.median(calls["fp32"]),
        "unet_fp16_block_medians_ms": blocks["fp16"],
        "unet_fp32_block_medians_ms": blocks["fp32"],
        "params": params,
    }
    print(f"torch {result['gpu']} (host {result['host_cpu']}): UNet batch 2 64x64: fp16 {result['unet_fp16_ms']:.1f} ms "
          f"(blocks {blocks['fp16']}), fp32 {result['unet_fp32_ms']:.1f} ms (blocks {blocks['fp32']}); "
          f"median of {args.blocks} x {args.iters} calls")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()

"""Turns one GPU benchmark run's outputs (bench/gpu_run.sh writes them to $OUT) into a committed results file.

    python bench/summarize.py --run /work/.device/N --variant sd15-random --label baseline \
        --out bench/results/2026-11-25-h100-baseline.json

The headline is unet_step_ratio_vs_torch_fp16 = WebGPU per-step UNet time / PyTorch fp16 eager per-step UNet
time, both measured on the same GPU (batch 2 inside the guided UNet), with stock Dawn (float32 compute on NVIDIA,
which offers no shader-f16). A float16-compute run (webgpu-<variant>-f16.json, Dawn's unsafe
vulkan_enable_f16_on_nvidia toggle) goes in its own section, webgpu_float16, with its own ratio.

A speed figure counts only beside the same run's check against PyTorch with the same weights on the same GPU
(bench/torch_reference.py): the result carries those fields and `checks_pass`, and is labelled NOT CHECKED
without them.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
from pathlib import Path


# Kernel kinds by a word in the kernel's name, first match wins (Winograd's kernels also name the ops fused in).
KINDS = [("winograd4_gemm", "winograd_gemm"), ("winograd2_gemm", "winograd_gemm"),
         ("winograd", "winograd_transforms"), ("group_norm", "group_norm"), ("conv2d", "conv2d"),
         ("attention", "attention"), ("matmul", "matmul"), ("softmax", "softmax"), ("layer_norm", "layer_norm")]


def figures(run: dict) -> dict:
    return {k: run[k] for k in ("text_encoder_ms", "unet_step_ms", "vae_ms", "end_to_end_ms", "first_image_ms",
                                "load_ms") if k in run}


def peak_memory(run: Path, name: str):
    """Peak GPU memory (MiB) of the run that wrote `name`, from gpu-peak.txt (bench/gpu_run.sh)."""
    peaks = run / "gpu-peak.txt"
    lines = [line.split() for line in peaks.read_text().splitlines()] if peaks.exists() else []
    return next((int(v) for n, v in lines if n == name), None)


CHECK_FIELDS = ("unet_rel_l2_err_vs_torch_fp32", "torch_fp16_unet_rel_l2_err_vs_torch_fp32", "image_psnr_vs_torch_db",
                "float16_unet_rel_l2_err_vs_torch_fp32", "float16_image_psnr_vs_torch_db",
                "subgroup_matrix_unet_rel_l2_err_vs_torch_fp32", "subgroup_matrix_image_psnr_vs_torch_db", "torch_image_std",
                "checks_pass")


def by_kind(run: dict, family: str) -> dict:
    """UNet GPU time per step by kernel kind, from the run's 2-step profile."""
    kinds = collections.defaultdict(float)
    for k in run.get("profile", []):
        if k["name"].startswith(f"{family}_unet_"):
            kind = next((kind for word, kind in KINDS if word in k["name"]), "other")
            kinds[kind] += k["ms"] / 2  # the profile run has 2 steps
    return {k: round(v, 1) for k, v in kinds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="folder holding webgpu-<variant>.json, gpu.txt")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--label", required=True, help="what this build is (e.g. baseline, splitgn)")
    parser.add_argument("--notes", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    webgpu = json.loads((args.run / f"webgpu-{args.variant}.json").read_text())
    torch = json.loads((args.run / f"torch-{args.variant}.json").read_text())
    family = torch["family"]
    checked = all(k in torch for k in ("unet_rel_l2_err_vs_torch_fp32", "image_psnr_vs_torch_db"))
    passed = checked and all(torch["checks_pass"].values())
    name, driver, memory = [x.strip() for x in (args.run / "gpu.txt").read_text().split(",")]
    runs = {}
    for key, suffix in (("float16", "-f16"), ("subgroup_matrix", "-sgmm")):
        path = args.run / f"webgpu-{args.variant}{suffix}.json"
        runs[key] = (json.loads(path.read_text()), path.name) if path.exists() else None
    float16 = runs["float16"][0] if runs["float16"] else None
    result = {
        "date": datetime.date.today().isoformat(),
        "label": args.label,
        "gpu": name, "driver": driver, "gpu_memory": memory,
        "adapter": webgpu["adapter"],
        "versions": {"apache-tvm": "0.27.0.post1", "webgpu (Dawn, npm)": "0.6.2", "torch": torch["torch"]},
        "workload": f"{args.variant}, {webgpu['image']['width']}x{webgpu['image']['height']}, CFG batch 2, "
                    f"{webgpu['steps']} {webgpu['scheduler']} steps, {webgpu.get('weights', 'random weights')}",
        "checked_against_torch": "passed" if passed else ("FAILED" if checked else "NOT CHECKED"),
        **{k: torch[k] for k in CHECK_FIELDS if k in torch},
        "compute": webgpu.get("compute", "float32 (before float16 libraries existed)"),
        "webgpu": figures(webgpu),
        "webgpu_peak_gpu_memory_mib": peak_memory(args.run, f"webgpu-{args.variant}.json"),
        "unet_gpu_time_per_step_by_kernel_kind_ms": by_kind(webgpu, family),
        "torch": {k: torch[k] for k in ("unet_fp16_ms", "unet_fp32_ms", "unet_fp16_block_medians_ms",
                                        "unet_fp32_block_medians_ms", "host_cpu") if k in torch},
        "unet_step_ratio_vs_torch_fp16": round(webgpu["unet_step_ms"] / torch["unet_fp16_ms"], 2),
        "unet_step_ratio_vs_torch_fp32": round(webgpu["unet_step_ms"] / torch["unet_fp32_ms"], 2),
        "top_kernels": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in x.items()}
                        for x in webgpu.get("profile", [])[:15]],
        "notes": args.notes,
    }
    result["first_image_ms"] = webgpu.get("first_image_ms")
    if family != "sd15":  # the SDXL issue's name for the same ratio
        result[f"{family}_unet_step_ratio_vs_torch_fp16"] = result["unet_step_ratio_vs_torch_fp16"]
    # The float16 libraries (-f16) and the same with their subgroup-matrix kernels (-sgmm), each in its own
    # section with its own ratio.
    for key, found in runs.items():
        if not found:
            continue
        run, file = found
        result[f"{key}_unet_step_ratio_vs_torch_fp16"] = round(run["unet_step_ms"] / torch["unet_fp16_ms"], 2)
        result[f"webgpu_{key}"] = {
            "compute": run.get("compute"), "dawn_toggles": run.get("dawn_toggles"), **figures(run),
            "peak_gpu_memory_mib": peak_memory(args.run, file),
            "unet_gpu_time_per_step_by_kernel_kind_ms": by_kind(run, family),
            "unet_step_ratio_vs_torch_fp16": result[f"{key}_unet_step_ratio_vs_torch_fp16"],
            "top_kernels": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in x.items()}
                            for x in run.get("profile", [])[:15]],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.label} ({result['checked_against_torch']} against PyTorch): unet {result['webgpu']['unet_step_ms']:.1f} ms/step, ratio vs torch fp16 "
          f"{result['unet_step_ratio_vs_torch_fp16']}"
          + (f"; float16 compute {float16['unet_step_ms']:.1f} ms/step, ratio "
             f"{result['webgpu_float16']['unet_step_ratio_vs_torch_fp16']}" if float16 else "")
          + (f"; subgroup matrix {runs['subgroup_matrix'][0]['unet_step_ms']:.1f} ms/step, ratio "
             f"{result['subgroup_matrix_unet_step_ratio_vs_torch_fp16']}" if runs["subgroup_matrix"] else "")
          + f" -> {args.out}")


if __name__ == "__main__":
    main()

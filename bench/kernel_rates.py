"""Per-kernel arithmetic rates of one benchmark run: FLOPs of each UNet kernel (TVM's estimate over the lowered
module) over its GPU time in the run's profile, by kind and for the heaviest kernels, against the GPU's peak.

    .venv/bin/python bench/kernel_rates.py --lowered artifacts/sd15-random/unet/lowered.v1.json \\
        --run /work/.device/N/webgpu-sd15-random.json [--peak-tflops 67] [--top 12]

The profile (bench/webgpu_sd.mjs --profile) covers 2 UNet steps; kernel names there are
`<prefix><PrimFunc name>_kernel`. --peak-tflops is the GPU's float32 FMA rate (H100 and H200 SXM: ~67).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
sys.path.insert(0, str(ROOT / "bench"))

PROFILED_STEPS = 2


def kernel_flops(lowered: Path) -> dict[str, float]:
    """{PrimFunc name: FLOPs per call} (TVM's estimate) for every kernel of the lowered module."""
    import tvm

    from lib.relax_io import load_module

    mod, _ = load_module(lowered, f"make {lowered}")
    return {gv.name_hint: float(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": f})))
            for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def main():
    from summarize import KINDS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lowered", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="webgpu-<variant>.json of a --profile run")
    parser.add_argument("--prefix", default="sd15_unet_")
    parser.add_argument("--peak-tflops", type=float, default=67.0)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    flops = kernel_flops(args.lowered)
    profile = [k for k in json.loads(args.run.read_text())["profile"] if k["name"].startswith(args.prefix)]
    kinds = collections.defaultdict(lambda: [0.0, 0.0])
    rows = []
    for k in profile:
        name = k["name"][len(args.prefix):].removesuffix("_kernel")
        per_call = flops.get(name, 0.0)
        ms = k["ms"] / PROFILED_STEPS
        total = per_call * k["calls"] / PROFILED_STEPS
        kind = next((kind for word, kind in KINDS if word in name), "other")
        kinds[kind][0] += total
        kinds[kind][1] += ms
        rows.append((ms, name, k["calls"] // PROFILED_STEPS, total))

    def rate(gflop, ms):
        return gflop / ms / 1e9 if ms else 0.0

    print(f"UNet per step, by kind ({sum(v[1] for v in kinds.values()):.1f} ms GPU time; peak {args.peak_tflops:g} TFLOP/s)")
    print(f"{'kind':22} {'ms':>7} {'GFLOP':>8} {'TFLOP/s':>8} {'of peak':>8}")
    for kind, (total, ms) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        r = rate(total, ms)
        print(f"{kind:22} {ms:7.2f} {total / 1e9:8.1f} {r:8.1f} {r / args.peak_tflops:8.0%}")
    print(f"\nheaviest kernels per step")
    print(f"{'kernel':40} {'calls':>5} {'ms':>7} {'GFLOP':>8} {'TFLOP/s':>8} {'of peak':>8}")
    for ms, name, calls, total in sorted(rows, reverse=True)[:args.top]:
        r = rate(total, ms)
        print(f"{name[:40]:40} {calls:5d} {ms:7.2f} {total / 1e9:8.1f} {r:8.1f} {r / args.peak_tflops:8.0%}")


if __name__ == "__main__":
    main()

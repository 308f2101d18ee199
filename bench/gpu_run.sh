#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu, .whl and .bench carried:
#   bash bench/gpu_run.sh "<variants>" "<webgpu bench options>" [torch] [f16]
# Sets up Node + Dawn (shared/tools/gpu-pack.sh), unpacks .bench/, runs bench/webgpu_sd.mjs on each variant with
# random weights (stock Dawn: float32 compute where the adapter lacks shader-f16, as on NVIDIA), with f16 a second
# time with the float16 libraries under Dawn's unsafe vulkan_enable_f16_on_nvidia toggle (reported apart), and
# bench/torch_unet.py when asked; JSON results go to $OUT.
set -uo pipefail
variants=$1; options=${2:-}; torch=${3:-}; f16=${4:-}
source bench/gpu_setup.sh
mkdir -p artifacts
for v in $variants; do mkdir -p "artifacts/$v" && xz -dc ".bench/$v.tar.xz" | tar -xf - -C "artifacts/$v"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
sample_memory() { (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$1"; sleep 0.5; done) & }
for v in $variants; do
  echo "== webgpu $v $options"
  sample_memory "$OUT/gpu-mem.txt"; sampler=$!
  gpu-node bench/webgpu_sd.mjs --model "artifacts/$v/model.json" --random-weights --json "$OUT/webgpu-$v.json" $options 2>&1 | grep -v XDG_RUNTIME
  kill $sampler
  echo "peak GPU memory used (MiB): $(sort -n "$OUT/gpu-mem.txt" | tail -1)"
  if [ -n "$f16" ]; then
    echo "== webgpu $v $options, float16 compute (dawn toggle vulkan_enable_f16_on_nvidia)"
    sample_memory "$OUT/gpu-mem-f16.txt"; sampler=$!
    gpu-node bench/webgpu_sd.mjs --model "artifacts/$v/model.json" --random-weights --json "$OUT/webgpu-$v-f16.json" \
      --compute float16 --dawn-toggle vulkan_enable_f16_on_nvidia $options 2>&1 | grep -v XDG_RUNTIME
    kill $sampler
    echo "peak GPU memory used (MiB): $(sort -n "$OUT/gpu-mem-f16.txt" | tail -1)"
  fi
done
if [ -n "$torch" ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  python3 bench/torch_unet.py --json "$OUT/torch.json"
fi

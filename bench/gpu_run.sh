#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu, .whl and .bench carried:
#   bash bench/gpu_run.sh "<variants>" "<webgpu bench options>" [torch] [f16|sgmm]
# Sets up Node + Dawn (shared/tools/gpu-pack.sh), unpacks .bench/, and for each variant runs bench/webgpu_sd.mjs
# on seeded weights (stock Dawn: float32 compute where the adapter lacks shader-f16, as on NVIDIA), with f16 a
# second time with the float16 libraries under Dawn's unsafe vulkan_enable_f16_on_nvidia toggle (reported
# apart), with sgmm a third time with their tensor-core kernels (chromium-experimental-subgroup-matrix, under
# allow_unsafe_apis too), each writing its correctness check; with torch, bench/torch_reference.py then checks both against
# PyTorch with the same weights on this GPU and times it. Results go to $OUT (at most 8 files come back):
# gpu.txt, gpu-peak.txt, webgpu-<v>.json, webgpu-<v>-f16.json, webgpu-<v>-sgmm.json, torch-<v>.json, the float32
# image and PyTorch's.
set -uo pipefail
variants=$1; options=${2:-}; torch=${3:-}; f16=${4:-}
source bench/gpu_setup.sh
mkdir -p artifacts
for v in $variants; do mkdir -p "artifacts/$v" && xz -dc ".bench/$v.tar.xz" | tar -xf - -C "artifacts/$v"; done
if [ -n "$torch" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
sample_memory() { (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$1"; sleep 0.5; done) & }
webgpu() {  # variant, json name, check dir, extra options
  local samples; samples=$(mktemp)
  sample_memory "$samples"; local sampler=$!
  gpu-node bench/webgpu_sd.mjs --model "artifacts/$1/model.json" --seeded-weights --check "$3" --json "$OUT/$2" $options ${4:-} 2>&1 \
    | grep -v XDG_RUNTIME
  kill $sampler
  echo "$2 $(sort -n "$samples" | tail -1)" >> "$OUT/gpu-peak.txt"
  echo "peak GPU memory used (MiB): $(sort -n "$samples" | tail -1)"
}
for v in $variants; do
  check=/tmp/check-$v; rm -rf "$check"; mkdir -p "$check"  # a warm machine keeps the last run's
  echo "== webgpu $v $options"
  webgpu "$v" "webgpu-$v.json" "$check"
  if [ -n "$f16" ]; then
    echo "== webgpu $v $options, float16 compute (dawn toggle vulkan_enable_f16_on_nvidia)"
    webgpu "$v" "webgpu-$v-f16.json" "$check" "--compute float16 --dawn-toggle vulkan_enable_f16_on_nvidia"
  fi
  if [ "$f16" = sgmm ]; then
    echo "== webgpu $v $options, float16 with subgroup matrices (dawn toggles allow_unsafe_apis, vulkan_enable_f16_on_nvidia)"
    webgpu "$v" "webgpu-$v-sgmm.json" "$check" \
      "--compute subgroup-matrix --dawn-toggle vulkan_enable_f16_on_nvidia --dawn-toggle allow_unsafe_apis"
  fi
  if [ -n "$torch" ]; then
    echo "== torch $v"
    python3 bench/torch_reference.py --variant "artifacts/$v" --check "$check" --json "$OUT/torch-$v.json" 2>&1 \
      | grep -v -i "warn\|torchvision"
    cp "$check/image-float32.png" "$OUT/image-$v.png"; cp "$check/torch-image-float32.png" "$OUT/torch-image-$v.png"
  fi
done

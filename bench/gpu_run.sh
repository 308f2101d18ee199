#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool), from the repo root, with .gpu, .whl and .bench carried:
#   bash bench/gpu_run.sh "<variants>" "<webgpu bench options>" [torch]
# Sets up Node + Dawn (shared/tools/gpu-pack.sh), unpacks .bench/, runs bench/webgpu_sd.mjs on each variant with
# random weights, and bench/torch_unet.py when asked; JSON results go to $OUT.
set -uo pipefail
variants=$1; options=${2:-}; torch=${3:-}
source bench/gpu_setup.sh
mkdir -p artifacts
for v in $variants; do mkdir -p "artifacts/$v" && xz -dc ".bench/$v.tar.xz" | tar -xf - -C "artifacts/$v"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
(while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$OUT/gpu-mem.txt"; sleep 0.5; done) &
sampler=$!
for v in $variants; do
  echo "== webgpu $v $options"
  gpu-node bench/webgpu_sd.mjs --model "artifacts/$v/model.json" --random-weights --json "$OUT/webgpu-$v.json" $options 2>&1 | grep -v XDG_RUNTIME
done
kill $sampler
echo "peak GPU memory used (MiB): $(sort -n "$OUT/gpu-mem.txt" | tail -1)"
if [ -n "$torch" ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  python3 bench/torch_unet.py --json "$OUT/torch.json"
fi

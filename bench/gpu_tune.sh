#!/usr/bin/env bash
# Runs on the lent GPU machine (device tool): measures the tuning candidates that `make tune-propose` left in
# each given work dir (carried), and brings measured.json back through $OUT.
#   bash bench/gpu_tune.sh build/tune/sd15/unet [more work dirs]
# with .gpu, .bench (npm packages) and .tune carried: .tune/<work dir>/ holds candidates.json and the
# xz-compressed candidates.wasm (bench/pack_tune.sh packs it; the wasm alone outgrows what the device carries).
set -uo pipefail
source bench/gpu_setup.sh
budget=${TUNE_BUDGET_S:-500}
for dir in "$@"; do
  mkdir -p "$dir" && cp ".tune/$dir/candidates.json" "$dir/" && xz -dc ".tune/$dir/candidates.wasm.xz" > "$dir/candidates.wasm"
  gpu-node stages/tune_measure.mjs --work-dir "$dir" --budget-s "$budget" 2>&1 | grep -v XDG_RUNTIME
  cp "$dir/measured.json" "$OUT/measured-$(echo "$dir" | tr / -).json"
done

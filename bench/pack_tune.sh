#!/usr/bin/env bash
# Packs tuning candidates (what `make tune-propose` left in each work dir) into .tune/ (git-ignored) for a
# measurement on the lent GPU machine: candidates.json and the xz-compressed candidates.wasm.
#   bench/pack_tune.sh build/tune/sd15/unet [build/tune/sd15/vae]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .tune
for dir in "$@"; do
  mkdir -p ".tune/$dir"
  cp "$dir/candidates.json" ".tune/$dir/"
  xz -T2 -6 -c "$dir/candidates.wasm" > ".tune/$dir/candidates.wasm.xz"
done
du -sh .tune

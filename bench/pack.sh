#!/usr/bin/env bash
# Packs what a benchmark run on the lent GPU machine needs into .bench/ (git-ignored; carry it with .gpu and
# .whl, which it fills too): the variants' model.json, library, subgroup-matrix kernels, tensor-cache indexes (no shards: weights are seeded there),
# scheduler and tokenizer files, and the weights folder without its weights (configs and tokenizers, from which
# PyTorch builds the same models there), xz-compressed; and the two npm packages the runtime imports.
#   bench/pack.sh artifacts/sd15-tiny artifacts/sd15-random
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .bench && mkdir -p .bench/npm/@mlc-ai .bench/npm/@huggingface
cp -a node_modules/@mlc-ai/web-runtime .bench/npm/@mlc-ai/
cp -a node_modules/@huggingface/tokenizers .bench/npm/@huggingface/
for variant in "$@"; do
  name=$(basename "$variant")
  (cd "$variant" && find . -name model.json -o -name '*.wasm' -o -name tensor-cache.json -o -name subgroup-matrix.v1.json -o -path './scheduler.v1/*.json' \
      -o -path './tokenizer.v1/*' -type f -o -path './weights/*' -type f ! -name '*.safetensors' ! -name '*.bin' \
      | grep -v '\.prov\.json$' | tar -cf - -T - ) | xz -T2 -6 > ".bench/$name.tar.xz"
done
# PyTorch is on the GPU machine, diffusers is not: its wheel (the version requirements.txt pins) and the one
# requirement that machine lacks, for bench/torch_reference.py.
if ! ls .whl/diffusers-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl "$(grep '^diffusers==' requirements.txt)" importlib_metadata
fi
du -sh .bench .whl

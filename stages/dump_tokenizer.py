"""dump-tokenizer: the model's own tokenizer files -> what the web runtime's tokenizer loads.

    python stages/dump_tokenizer.py --variant-dir artifacts/sd15-tiny --weights artifacts/sd15-tiny/weights

Writes artifacts/<variant>/tokenizer.v1/tokenizer.json (fast-tokenizer format, read by
@huggingface/tokenizers in web/runtime/tokenizer.js) and copies tokenizer_config.json beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.cli import (StageError, log_stage, paths_from, run_stage, stage_parser,  # noqa: E402
                     write_bytes_if_changed, write_provenance)
from lib.models import check_weights_folder, family  # noqa: E402


def main():
    parser = stage_parser(__doc__, submodule=False, weights=True)
    args = parser.parse_args()
    paths = paths_from(args)
    fam = family(paths.family)
    check_weights_folder(args.weights, fam)

    from lib.clip_vocab import write_tokenizer_json

    out = paths.tokenizer_dir
    for folder in fam.tokenizer_folders:
        source = args.weights / folder
        config = source / "tokenizer_config.json"
        if not config.exists():
            raise StageError(f"{source} has no tokenizer_config.json; is it a diffusers tokenizer folder?")
        write_tokenizer_json(source, out / folder / "tokenizer.json")
        write_bytes_if_changed(out / folder / "tokenizer_config.json", config.read_bytes())
        write_provenance(out / folder / "tokenizer.json", "dump-tokenizer", sorted(source.iterdir()))
    log_stage(paths, "dump-tokenizer")
    print(f"dump-tokenizer {paths.variant}: {', '.join(fam.tokenizer_folders)} -> {out}")


if __name__ == "__main__":
    run_stage("dump-tokenizer", main)

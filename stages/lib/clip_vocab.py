"""The CLIP BPE tokenizer of SD 1.5, built offline, and its tokenizer.json for the web runtime.

    write_clip_tokenizer(out_dir)             open_clip's BPE file -> diffusers' tokenizer/ folder
    write_tokenizer_json(tokenizer_dir, out)  diffusers' tokenizer/ folder -> tokenizer.json (fast format)

SD 1.5 uses the tokenizer of openai/clip-vit-large-patch14. Its vocabulary is not data of its own: it is
derived from OpenAI's BPE merge list, which open_clip ships as `bpe_simple_vocab_16e6.txt.gz`. That file is
one header line (`"bpe_simple_vocab_16e6.txt#version: 0.2`) and then merges, one `left right` pair a line,
best first. CLIP uses the first 49152 - 256 - 2 = 48894 of them. The vocabulary, in id order, is

    ids     0 ..   255  the 256 byte symbols of GPT-2's byte-to-unicode alphabet, in byte-table order
    ids   256 ..   511  the same 256 symbols with `</w>` (end of word) appended
    ids   512 .. 49405  the concatenation `left + right` of each merge, in merge order
    id          49406  <|startoftext|>
    id          49407  <|endoftext|>      (also the pad and unk token)

which is 49408 entries, and `merges.txt` is `#version: 0.2` followed by those 48894 merges. This is the
construction of `open_clip/tokenizer.py` (`SimpleTokenizer.__init__`), with Hugging Face's names for the two
special tokens. "a photo of a cat" tokenizes to [49406, 320, 1125, 539, 320, 2368, 49407], as the real one does.

The folder written is what diffusers' `tokenizer/` holds (vocab.json, merges.txt, tokenizer_config.json,
special_tokens_map.json) and what `transformers.CLIPTokenizer.from_pretrained` loads. The web runtime reads
one `tokenizer.json` instead (the `tokenizers` library's format, which `@huggingface/tokenizers` parses):
`write_tokenizer_json` converts a tokenizer/ folder, real or generated, to that file.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from .cli import StageError, write_bytes_if_changed

VOCAB_SIZE = 49408
NUM_MERGES = 49152 - 256 - 2  # what open_clip (and OpenAI's CLIP) take from the merge file
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"  # also pad and unk
MODEL_MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table: printable Latin-1 bytes map to themselves, the
    other 68 bytes (controls, space, 0x7f-0xa0, 0xad) to U+0100.. in byte order. Dict order is the id order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def open_clip_bpe_path() -> Path:
    """The BPE file shipped inside the open_clip package, found without importing open_clip (its import
    needs torchvision, which this project does not install)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise StageError("open_clip is not installed; it ships the CLIP BPE file "
                         "(`pip install --no-deps open_clip_torch`, see requirements.txt)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.exists():
            return path
    raise StageError(f"bpe_simple_vocab_16e6.txt.gz not found in {list(spec.submodule_search_locations)}; "
                     "reinstall open_clip_torch")


def read_merges(bpe_path: Path) -> list[tuple[str, str]]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    if not lines[0].endswith("#version: 0.2"):
        raise StageError(f"{bpe_path}: unexpected header {lines[0]!r} (expected a BPE merge file, version 0.2)")
    merges = [tuple(line.split()) for line in lines[1:1 + NUM_MERGES]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise StageError(f"{bpe_path}: expected {NUM_MERGES} merges of two symbols each")
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == len(tokens) == VOCAB_SIZE, "every vocabulary entry is distinct"
    return vocab


def _special(content: str) -> dict:
    # As openai/clip-vit-large-patch14 and SD 1.5's tokenizer/ declare them.
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_clip_tokenizer(out_dir: Path, bpe_path: Path | None = None, pad_token: str = EOS) -> list[Path]:
    """Writes SD 1.5's CLIP tokenizer in diffusers' tokenizer/ layout; returns the files written or kept. SDXL's
    second tokenizer (tokenizer_2/) is the same vocabulary padding with "!" instead of <|endoftext|>."""
    out_dir = Path(out_dir)
    merges = read_merges(bpe_path or open_clip_bpe_path())
    vocab = clip_vocab(merges)
    special_tokens_map = {"bos_token": _special(BOS), "eos_token": _special(EOS), "pad_token": pad_token,
                          "unk_token": _special(EOS)}
    tokenizer_config = {
        "add_prefix_space": False,
        "bos_token": _special(BOS),
        "do_lower_case": True,
        "eos_token": _special(EOS),
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _special(EOS),
    }
    files = {
        "vocab.json": (json.dumps(vocab, ensure_ascii=False) + "\n").encode("utf-8"),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8"),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
        "special_tokens_map.json": _json_bytes(special_tokens_map),
    }
    for name, data in files.items():
        write_bytes_if_changed(out_dir / name, data)
    return [out_dir / name for name in files]


def write_tokenizer_json(tokenizer_dir: Path, out_path: Path) -> Path:
    """Converts a diffusers tokenizer/ folder (vocab.json + merges.txt + configs, as SD 1.5 checkpoints ship
    it) to one tokenizer.json, through transformers' own CLIPTokenizer, so the normalizer, pre-tokenizer and
    post-processor are exactly what Python tokenizes with. Padding and truncation are left out of the file:
    the runtime pads to 77 itself (web/runtime/tokenizer.js)."""
    from transformers import CLIPTokenizer  # heavy import; only this function needs it

    tokenizer_dir = Path(tokenizer_dir)
    for name in ("vocab.json", "merges.txt"):
        if not (tokenizer_dir / name).exists():
            raise StageError(f"missing {tokenizer_dir / name}; a diffusers tokenizer/ folder holds it "
                             "(for WEIGHTS=tiny|random it is made by `make sd15 WEIGHTS=...`)")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    # Compact (no indentation): the page downloads this file.
    write_bytes_if_changed(Path(out_path), (backend.to_str(pretty=False) + "\n").encode("utf-8"))
    return Path(out_path)


if __name__ == "__main__":
    # python -m stages.lib.clip_vocab OUT_DIR: writes OUT_DIR/tokenizer/ and OUT_DIR/tokenizer.json (a check by hand).
    import sys

    out = Path(sys.argv[1])
    for f in write_clip_tokenizer(out / "tokenizer"):
        print(f"wrote {f} ({f.stat().st_size} bytes)")
    f = write_tokenizer_json(out / "tokenizer", out / "tokenizer.json")
    print(f"wrote {f} ({f.stat().st_size} bytes)")

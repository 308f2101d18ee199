"""The CLIP tokenizer: the offline-built vocabulary is CLIP's, and the web runtime's tokenizer gives the same ids
as Python's, for what the UNet sees (padded and truncated to 77 as diffusers' StableDiffusionPipeline does).

    .venv/bin/python -m pytest tests/python/test_tokenizer.py -q

Python side: stages/lib/clip_vocab.py writes a diffusers tokenizer/ folder, transformers.CLIPTokenizer loads it.
JS side: web/runtime/tokenizer.js reads the tokenizer.json written from that folder, run under node
(tests/python/js/tokenize.mjs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stages.lib.clip_vocab import BOS, EOS, VOCAB_SIZE, write_clip_tokenizer, write_tokenizer_json  # noqa: E402

MAX_LENGTH = 77
TOKENIZE_JS = ROOT / "tests/python/js/tokenize.mjs"

LONG = [
    "a photo of a cat " * 30,                                   # many short words
    "supercalifragilisticexpialidocious" * 12,                  # one word split into many pieces
    "masterpiece, best quality, " * 12 + "東京 🐱 " * 10,       # punctuation runs, CJK and emoji past 75
    " ".join(str(i) for i in range(200)),                       # one token per digit
    "x" * 400,                                                   # a single enormous word
]

PROMPTS = [
    "a photo of a cat",
    "A PHOTO of a Cat!!!",
    "an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
    "hello, world... (masterpiece:1.2), [best quality]; {x} <y> a/b\\c |d| ~e~ `f` @g #h",
    "it's a dog's life, they'll've we'd I'm you're can't IT'S O'Neil",
    "1234567890 3.14159 -42 1e10 #1 $5 100% 2024-01-31 12:30",
    "café naïve résumé Ångström Øresund façade jalapeño",
    "東京タワー 北京 서울 中文测试 日本語のテキスト",
    "🐱🐶 cat emoji 👍🏽 family 👨‍👩‍👧 flag 🇯🇵 ❤️",
    "  leading and trailing   spaces  ",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u3000ideographic space",
    "\u0085 NEL \ufeff BOM \u180e mongolian \u200b zero width \u2028 line sep",
    "",
    "   ",
    "\n\t",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ ΌΣΟΣ İstanbul ß ẞ ǅ",
    "e\u0301 combining, é precomposed, \u212b angstrom sign, \u1e9b\u0323",
    "ﬁ ligature ① ｆｕｌｌｗｉｄｔｈ ℌ ²",
    "<|endoftext|> inside <|startoftext|> text <|ENDOFTEXT|> <|endoftext",
    "html &amp; entities &lt;b&gt; &#39;",
    "a\u0000null, a\u0007bell, a\u001b escape, del\u007f",
    "العربية עברית हिन्दी ไทย русский",
    *LONG,
]


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    write_clip_tokenizer(out / "tokenizer")
    write_tokenizer_json(out / "tokenizer", out / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def py_tokenizer(tokenizer_files):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tokenizer_files / "tokenizer")


def python_ids(tokenizer, text: str) -> list[int]:
    # Exactly the call of diffusers' StableDiffusionPipeline.encode_prompt.
    return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids


def js_ids(tokenizer_files: Path, pairs: list[tuple[str, str]]) -> list[list[int]]:
    if shutil.which("node") is None or not (ROOT / "node_modules/@huggingface/tokenizers").exists():
        pytest.skip("needs node and `npm ci` (node_modules/@huggingface/tokenizers)")
    result = subprocess.run(
        ["node", str(TOKENIZE_JS), str(tokenizer_files / "tokenizer.json"),
         str(tokenizer_files / "tokenizer/tokenizer_config.json")],
        input=json.dumps(pairs), capture_output=True, text=True, encoding="utf-8", check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_vocabulary_is_clips(py_tokenizer):
    assert len(py_tokenizer) == VOCAB_SIZE
    assert py_tokenizer.convert_tokens_to_ids([BOS, EOS]) == [49406, 49407]
    assert (py_tokenizer.bos_token_id, py_tokenizer.eos_token_id, py_tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert py_tokenizer.model_max_length == MAX_LENGTH
    # What openai/clip-vit-large-patch14 gives.
    assert py_tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert py_tokenizer.decode(py_tokenizer("A Photo of a CAT").input_ids, skip_special_tokens=True) == "a photo of a cat"


def test_files_are_rewritten_only_on_change(tokenizer_files):
    files = [*(tokenizer_files / "tokenizer").iterdir(), tokenizer_files / "tokenizer.json"]
    before = {p: p.stat().st_mtime_ns for p in files}
    write_clip_tokenizer(tokenizer_files / "tokenizer")
    write_tokenizer_json(tokenizer_files / "tokenizer", tokenizer_files / "tokenizer.json")
    assert before == {p: p.stat().st_mtime_ns for p in files}


def test_js_matches_python(tokenizer_files, py_tokenizer):
    # Each prompt once as the prompt (row 1) and once as the negative prompt (row 0).
    pairs = [(PROMPTS[(i + 1) % len(PROMPTS)], p) for i, p in enumerate(PROMPTS)]
    rows = js_ids(tokenizer_files, pairs)
    assert len(rows) == len(pairs)
    mismatches = []
    for (negative, prompt), row in zip(pairs, rows):
        expected = python_ids(py_tokenizer, negative) + python_ids(py_tokenizer, prompt)
        if row != expected:
            mismatches.append(f"{prompt!r} / {negative!r}:\n  js {row}\n  py {expected}")
    assert not mismatches, "\n".join(mismatches)


def test_truncation_keeps_eos_last(tokenizer_files, py_tokenizer):
    rows = js_ids(tokenizer_files, [("", text) for text in LONG])
    for text, row in zip(LONG, rows):
        prompt = row[MAX_LENGTH:]
        full = py_tokenizer(text).input_ids
        assert len(full) > MAX_LENGTH, "each LONG prompt must really be over-long"
        # <|startoftext|>, the first 75 text tokens, <|endoftext|>: nothing padded, the end token kept.
        assert prompt == full[:MAX_LENGTH - 1] + [49407]
        assert prompt == python_ids(py_tokenizer, text)


def test_empty_prompt_is_bos_then_padding(tokenizer_files, py_tokenizer):
    [row] = js_ids(tokenizer_files, [("", "")])
    assert row == [49406] + [49407] * (MAX_LENGTH - 1) + [49406] + [49407] * (MAX_LENGTH - 1)
    assert row[:MAX_LENGTH] == python_ids(py_tokenizer, "")

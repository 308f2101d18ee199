// The CLIP tokenizer of the web runtime: prompt text -> the int32 (2, L) `input_ids` of a text encoder, L its
// text length (the manifest's text_encoders[].max_length; 77 for CLIP).
//
// It mirrors what diffusers' pipelines do (diffusers 0.42, transformers 5.24):
//     tokenizer(text, padding="max_length", max_length=L, truncation=True).input_ids
// for the negative prompt (row 0; "" when there is none) and the prompt (row 1): <|startoftext|>, at most L - 2
// text tokens, <|endoftext|>, then the pad token up to L (<|endoftext|> for SD 1.5's CLIP; SDXL's second
// tokenizer pads with "!", as its tokenizer_config.json says). The tokenizer itself is
// `@huggingface/tokenizers` reading the tokenizer.json that `stages/lib/clip_vocab.py` (write_tokenizer_json)
// writes from the model's tokenizer/ folder. tests/python/test_tokenizer.py checks ids against Python.
//
// One correction to the library (0.2.0): its Lowercase normalizer is String.prototype.toLowerCase, which
// applies Unicode's context-sensitive Final_Sigma rule ("ΟΔΟΣ" -> "οδος"); the Rust `tokenizers` lowercases
// code point by code point ("οδοσ"). `perCodePointLowercase` below restores the Rust behaviour.
//
// No DOM: runs in the page's worker and in Node. The bare import is mapped by the page's import map.

import { Tokenizer, LowercaseNormalizer, SequenceNormalizer } from "@huggingface/tokenizers";

// CLIP's context length: the length when neither the caller nor tokenizer_config.json (model_max_length) gives one.
export const MAX_LENGTH = 77;

const textDecoder = new TextDecoder();

function asObject(json) {
  if (typeof json === "string") return JSON.parse(json);
  if (json instanceof ArrayBuffer || ArrayBuffer.isView(json)) return JSON.parse(textDecoder.decode(json));
  return json;
}

function tokenContent(token) {
  return typeof token === "string" ? token : token?.content;
}

// Lowercases each code point on its own, as Rust's `char::to_lowercase` does in tokenizers' Lowercase
// normalizer. A lone code point never meets the Final_Sigma context, so toLowerCase of one is context-free.
function lowercasePerCodePoint(text) {
  let out = "";
  for (const ch of text) out += ch.toLowerCase();
  return out;
}

function perCodePointLowercase(normalizer) {
  if (normalizer instanceof LowercaseNormalizer) normalizer.normalize = lowercasePerCodePoint;
  if (normalizer instanceof SequenceNormalizer) normalizer.normalizers.forEach(perCodePointLowercase);
  return normalizer;
}

export class ClipTokenizer {
  // tokenizer: a @huggingface/tokenizers Tokenizer; ids of the begin, end and pad tokens; maxLength: the text
  // length when a call names none.
  constructor(tokenizer, { bosId, eosId, padId, maxLength = MAX_LENGTH }) {
    this.tokenizer = tokenizer;
    this.bosId = bosId;
    this.eosId = eosId;
    this.padId = padId;
    this.maxLength = maxLength;
  }

  // One text -> Int32Array(length): [bos, first length - 2 text tokens, eos, pad...], as diffusers truncates and pads.
  encode(text, length = this.maxLength) {
    const ids = this.tokenizer.encode(String(text ?? ""), { add_special_tokens: false }).ids;
    const kept = ids.slice(0, length - 2);
    const out = new Int32Array(length).fill(this.padId);
    out[0] = this.bosId;
    out.set(kept, 1);
    out[kept.length + 1] = this.eosId;
    return out;
  }

  // How much of `text` the text encoder reads: {tokens, max, dropped}; `dropped` is the user's own text from the
  // first word that does not fit whole (the tokenizer's decode would give its lower-cased, re-spaced tokens), empty
  // when everything fits. Word boundaries are found by bisection: a handful of encodes, only for long prompts.
  fit(text, length = this.maxLength) {
    text = String(text ?? "");
    const count = (t) => this.tokenizer.encode(t, { add_special_tokens: false }).ids.length;
    const tokens = count(text), max = length - 2;
    if (tokens <= max) return { tokens, max, dropped: "" };
    const starts = [...text.matchAll(/\S+/g)].map((m) => m.index);
    let lo = 0, hi = starts.length; // the first `lo` words fit
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (count(text.slice(0, mid < starts.length ? starts[mid] : text.length)) <= max) lo = mid;
      else hi = mid - 1;
    }
    return { tokens, max, dropped: text.slice(starts[lo] ?? text.length).trim() };
  }

  // Row 0 the negative prompt, row 1 the prompt: the `input_ids` (2, length) of a compiled text encoder.
  encodePair(negative, prompt, length = this.maxLength) {
    const out = new Int32Array(2 * length);
    out.set(this.encode(negative, length), 0);
    out.set(this.encode(prompt, length), length);
    return out;
  }
}

// tokenizerJson: the parsed tokenizer.json, or its text or bytes. tokenizerConfig (optional): the parsed
// tokenizer_config.json (or its bytes); only its pad_token (default: the end token, as CLIP's) and
// model_max_length (the default text length) are read.
export async function loadTokenizer(tokenizerJson, tokenizerConfig = {}) {
  const json = asObject(tokenizerJson);
  const config = asObject(tokenizerConfig) ?? {};
  const post = json.post_processor;
  if (post?.type !== "RobertaProcessing" || !post.cls || !post.sep) {
    throw new Error(`tokenizer.json: expected CLIP's RobertaProcessing post-processor, found ${post?.type}; ` +
                    "regenerate it with `make` (stages/lib/clip_vocab.py write_tokenizer_json)");
  }
  const maxLength = config.model_max_length ?? MAX_LENGTH;
  if (!Number.isInteger(maxLength) || maxLength < 3) {
    throw new Error(`tokenizer_config.json: model_max_length ${maxLength} leaves no room for text; regenerate it with \`make\``);
  }
  const tokenizer = new Tokenizer(json, config);
  perCodePointLowercase(tokenizer.normalizer);
  const [, bosId] = post.cls;
  const [eosToken, eosId] = post.sep;
  const padToken = tokenContent(config.pad_token) ?? eosToken;
  const padId = tokenizer.token_to_id(padToken);
  if (padId === undefined) throw new Error(`tokenizer.json: pad token ${padToken} is not in the vocabulary`);
  return new ClipTokenizer(tokenizer, { bosId, eosId, padId, maxLength });
}

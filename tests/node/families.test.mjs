// Model families on the runtime side, without a GPU: the manifest (v3) the build writes, checked and read by
// web/runtime/load.js; the pipeline registry (pipeline.js PIPELINES) picking the class by `family`; the
// tokenizer's text length and pad token per text encoder (SDXL's second tokenizer pads with "!").
//
//   node --test tests/node/families.test.mjs        (make test-node runs it with the other Node tests)

import assert from "node:assert/strict";
import { test } from "node:test";

import { FormatError } from "../../web/runtime/errors.js";
import { MANIFEST_VERSION, checkManifest, chooseLibraries, checkBufferLimits, modelFiles, schedulerNames }
  from "../../web/runtime/load.js";
import { PIPELINES, StableDiffusion, StableDiffusionXL, pipelineClass } from "../../web/runtime/pipeline.js";
import { loadTokenizer } from "../../web/runtime/tokenizer.js";

const URL_ = "https://example.com/models/sdxl-tiny/model.json";
const file = (path, bytes = 10) => ({ path, bytes, sha256: "0".repeat(64) });
const library = (prefix, largest, functions = {}) => ({ prefix, features: [], largest_tensor_bytes: largest, functions });
const tokenizerFiles = (folder) => ({
  "tokenizer.json": file(`tokenizer.v1/${folder}/tokenizer.json`),
  "tokenizer_config.json": file(`tokenizer.v1/${folder}/tokenizer_config.json`),
});

// The shape stages/write_manifest.py writes for SDXL (sizes of the tiny model).
function sdxlManifest() {
  const encoder = (sub) => ({ libraries: { float32: library(`sdxl_${sub}_`, 6324224) }, params: file(`${sub}/params.v1/tensor-cache.json`) });
  return {
    format: "websd-model",
    version: 3,
    family: "sdxl",
    variant: "sdxl-tiny",
    wasm: file("stable_diffusion_webgpu.wasm", 1000),
    latent_shape: [1, 4, 16, 16],
    image: { height: 128, width: 128 },
    text_encoders: [
      { submodule: "clip", tokenizer: "tokenizer", pooled: false, max_length: 77 },
      { submodule: "clip2", tokenizer: "tokenizer_2", pooled: true, max_length: 77 },
    ],
    zero_empty_negative: true,
    submodules: {
      clip: encoder("clip"),
      clip2: encoder("clip2"),
      unet: { libraries: { float32: library("sdxl_unet_", 786432) }, params: file("unet/params.v1/tensor-cache.json") },
      vae: { libraries: { float32: library("sdxl_vae_", 2359296) }, params: file("vae/params.v1/tensor-cache.json") },
      sched: { libraries: { float32: library("sdxl_sched_", 4096) } },
    },
    schedulers: {
      euler: file("scheduler.v1/scheduler_euler_discrete_consts.json"),
      dpm: file("scheduler.v1/scheduler_dpm_solver_multistep_consts.json"),
    },
    default_scheduler: "euler",
    tokenizers: { tokenizer: tokenizerFiles("tokenizer"), tokenizer_2: tokenizerFiles("tokenizer_2") },
    required_features: [],
    download_bytes: 22_000_000,
  };
}

test("the registry picks the pipeline class by family, and names the known families for any other", () => {
  assert.equal(pipelineClass("sd15"), StableDiffusion);
  assert.equal(pipelineClass("sdxl"), StableDiffusionXL);
  assert.ok(StableDiffusionXL.prototype instanceof StableDiffusion, "SDXL shares the SD 1.5 pipeline but for its conditioning");
  assert.deepEqual(Object.keys(PIPELINES), ["sd15", "sdxl"]);
  for (const family of ["sd3", undefined, "constructor", "toString"]) {
    assert.throws(() => pipelineClass(family, "models/x/model.json"), (err) => err instanceof FormatError &&
      err.message.startsWith(`models/x/model.json is of family ${JSON.stringify(family)}, which this page cannot run; it runs sd15, sdxl.`));
  }
});

test("a v3 SDXL manifest: checked, every file listed (both tokenizers), its schedulers with the default first", () => {
  const manifest = sdxlManifest();
  assert.equal(MANIFEST_VERSION, 3);
  assert.equal(checkManifest(manifest, URL_), manifest);
  assert.deepEqual(schedulerNames(manifest), ["euler", "dpm"]);
  assert.deepEqual(schedulerNames({ ...manifest, default_scheduler: "dpm" }), ["dpm", "euler"]);
  const files = modelFiles(manifest, URL_);
  const base = "https://example.com/models/sdxl-tiny/";
  assert.deepEqual(files.filter((f) => f.kind === "tokenizer").map((f) => f.url.slice(base.length)), [
    "tokenizer.v1/tokenizer/tokenizer.json", "tokenizer.v1/tokenizer/tokenizer_config.json",
    "tokenizer.v1/tokenizer_2/tokenizer.json", "tokenizer.v1/tokenizer_2/tokenizer_config.json",
  ]);
  assert.deepEqual(files.filter((f) => f.kind === "weights-index").map((f) => f.submodule), ["clip", "clip2", "unet", "vae"]);
  assert.deepEqual(files.filter((f) => f.kind === "scheduler").length, 2);
  assert.equal(files[0].kind, "library");
});

test("manifests this page cannot read get a FormatError that names the problem", () => {
  const cases = [
    [{ version: 2 }, /model manifest format websd-model v2; this page reads websd-model v3/],
    [{ family: "sd3" }, /is of family "sd3", which this page cannot run; it runs sd15, sdxl/],
    [{ text_encoders: [] }, /it lists no text_encoders; rebuild the model with `make sdxl WEIGHTS=...`/],
    [{ tokenizers: { tokenizer: tokenizerFiles("tokenizer") } }, /text encoder clip2's tokenizer tokenizer_2 is not among its tokenizers/],
    [{ default_scheduler: "pndm" }, /its default scheduler pndm is not among its schedulers/],
  ];
  for (const [patch, expected] of cases) {
    assert.throws(() => checkManifest({ ...sdxlManifest(), ...patch }, URL_), (err) => err instanceof FormatError && expected.test(err.message),
      JSON.stringify(patch));
  }
});

test("an adapter whose buffers are smaller than the model's largest tensor is refused before any download", () => {
  const libraries = chooseLibraries(sdxlManifest(), new Set());
  checkBufferLimits(libraries, { maxBufferSize: 2 ** 28, maxStorageBufferBindingSize: 2 ** 27 });
  assert.throws(() => checkBufferLimits(libraries, { maxBufferSize: 2 ** 28, maxStorageBufferBindingSize: 4 << 20 }),
    { name: "DeviceLimitError", message: /needs GPU buffers of 6 MB, but this GPU and browser allow at most 4 MB/ });
});

// A CLIP tokenizer.json of the shape stages/lib/clip_vocab.py writes, with a vocabulary of single letters (no
// merges: "cat" is c, a, t</w>) and SDXL's "!" as token 0.
function letterTokenizer() {
  const vocab = { "!": 0 };
  for (const [i, c] of [..."abcdefghijklmnopqrstuvwxyz"].entries()) Object.assign(vocab, { [c]: 1 + i, [`${c}</w>`]: 27 + i });
  Object.assign(vocab, { "<|startoftext|>": 49406, "<|endoftext|>": 49407 });
  const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true });
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [special(0, "!"), special(49406, "<|startoftext|>"), special(49407, "<|endoftext|>")],
    normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Replace", pattern: { Regex: "\\s+" }, content: " " }, { type: "Lowercase" }] },
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" }, behavior: "Removed", invert: true },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }] },
    post_processor: { type: "RobertaProcessing", sep: ["<|endoftext|>", 49407], cls: ["<|startoftext|>", 49406], trim_offsets: false, add_prefix_space: false },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: "<|endoftext|>", continuing_subword_prefix: "", end_of_word_suffix: "</w>",
             fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
}

test("each text encoder's tokenizer pads with its own pad token to the length it is given", async () => {
  const BOS = 49406, EOS = 49407;
  const first = await loadTokenizer(letterTokenizer(), { model_max_length: 77 }); // pads with the end token
  const second = await loadTokenizer(JSON.stringify(letterTokenizer()), new TextEncoder().encode(JSON.stringify({ model_max_length: 77, pad_token: "!" })));
  const cat = [BOS, 27, 3, 1, 46, EOS]; // <|startoftext|> a</w> c a t</w> <|endoftext|>
  assert.deepEqual(Array.from(first.encodePair("", "a cat", 8)), [BOS, EOS, EOS, EOS, EOS, EOS, EOS, EOS, ...cat, EOS, EOS]);
  assert.deepEqual(Array.from(second.encodePair("", "a cat", 8)), [BOS, EOS, 0, 0, 0, 0, 0, 0, ...cat, 0, 0]);
  assert.equal(second.encode("a cat").length, 77, "the config's model_max_length when the caller names none");
  // Truncated to the length: at most length - 2 text tokens, then the end token.
  assert.deepEqual(Array.from(second.encode("abc abc", 5)), [BOS, 1, 2, 29, EOS]);
  assert.deepEqual(second.fit("abc abc", 5), { tokens: 6, max: 3, dropped: "abc" });
  assert.deepEqual(second.fit("abc abc"), { tokens: 6, max: 75, dropped: "" });
});

// The manifests the build wrote, where there are some (TEST_ARTIFACTS, default build/test-artifacts): each is
// one this runtime reads, with the pipeline of its family.
test("the built manifests check out and get their family's pipeline", async (t) => {
  const { readdir, readFile } = await import("node:fs/promises");
  const path = await import("node:path");
  const root = path.resolve(import.meta.dirname, "../..", process.env.TEST_ARTIFACTS ?? "build/test-artifacts");
  const found = [];
  for (const variant of await readdir(root).catch(() => [])) {
    const text = await readFile(path.join(root, variant, "model.json"), "utf8").catch(() => null);
    if (text) found.push(JSON.parse(text));
  }
  if (!found.length) return t.skip(`no model.json under ${root}`);
  for (const manifest of found) {
    checkManifest(manifest, manifest.variant);
    assert.equal(pipelineClass(manifest.family), PIPELINES[manifest.family]);
    const unet = manifest.submodules.unet.libraries.float32.functions.unet.inputs.map((i) => i.name);
    const embeddings = manifest.text_encoders.map((_, i) => (i === 0 ? "embeddings" : `embeddings_${i + 1}`));
    const added = manifest.family === "sdxl" ? ["text_embeds", "time_ids"] : [];
    assert.deepEqual(unet, ["latents", "timestep", ...embeddings, ...added, "guidance"], manifest.variant);
    t.diagnostic(`${manifest.variant}: ${manifest.family}, ${manifest.text_encoders.length} text encoder(s)`);
  }
});

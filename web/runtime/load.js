// Loading a model, in one fixed order, each step reporting progress (after web-llm's engine.reload):
//   manifest -> WebGPU adapter and device (checked before any weight is fetched) -> library (.wasm)
//   -> tokenizers and scheduler constants -> weights, submodule by submodule -> the family's pipeline.
// Bytes come from `fetchFile(url, {sha256, bytes})`, the caller's business: the page passes its
// Cache-API fetcher (web/app/cache.js), the Node CLI reads files. Every file is checked against the
// sha256 in the manifest (or in the tensor cache, for shards) before use.

import { DeviceLimitError, FormatError, MissingFeatureError, NoWebGPUError, deviceLoss } from "./errors.js";
import { verify } from "./integrity.js";
import { checkTensorCache, loadTensorCache } from "./params.js";
import { pipelineClass } from "./pipeline.js";
import { loadTokenizer } from "./tokenizer.js";
import { compileShaders, deviceLimits, instantiateLibrary, openVM, prepareParams, replaceKernels, softwareAdapter } from "./tvm.js";

export const MANIFEST_FORMAT = "websd-model";
// 2: libraries per compute dtype; 3: families (text_encoders, tokenizers by folder, the family's schedulers and
// default, functions' outputs). stages/write_manifest.py writes it.
export const MANIFEST_VERSION = 3;

const decoder = new TextDecoder();
/** `bytes` (UTF-8 JSON) parsed; a FormatError naming `url` if they are not JSON. */
export const parseJSON = (bytes, url) => {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (err) {
    throw new FormatError(`${url} is not valid JSON (${err.message})`);
  }
};

/** `manifest` if this runtime can run it: the format and version it reads, a family it has a pipeline for
 * (pipeline.js PIPELINES), and text encoders whose tokenizers and schedulers the manifest lists; else a
 * FormatError naming `url`. */
export function checkManifest(manifest, url) {
  if (manifest?.format !== MANIFEST_FORMAT || manifest?.version !== MANIFEST_VERSION) {
    throw new FormatError(
      `${url}: model manifest format ${manifest?.format} v${manifest?.version}; this page reads ${MANIFEST_FORMAT} v${MANIFEST_VERSION}`,
    );
  }
  pipelineClass(manifest.family, url);
  const bad = (what) => new FormatError(`${url}: ${what}; rebuild the model with \`make ${manifest.family} WEIGHTS=...\``);
  if (!Array.isArray(manifest.text_encoders) || manifest.text_encoders.length === 0) throw bad("it lists no text_encoders");
  for (const { submodule, tokenizer } of manifest.text_encoders) {
    if (!manifest.submodules?.[submodule]) throw bad(`text encoder ${submodule} is not among its submodules`);
    if (!manifest.tokenizers?.[tokenizer]) throw bad(`text encoder ${submodule}'s tokenizer ${tokenizer} is not among its tokenizers`);
  }
  if (!manifest.schedulers?.[manifest.default_scheduler]) {
    throw bad(`its default scheduler ${manifest.default_scheduler} is not among its schedulers`);
  }
  return manifest;
}

/** The manifest's scheduler names, the default first (the order a menu offers them in). */
export const schedulerNames = (manifest) =>
  [manifest.default_scheduler, ...Object.keys(manifest.schedulers).filter((n) => n !== manifest.default_scheduler)];

// stages/lib/subgroup_matrix.py's FORMAT and VERSION
const KERNELS_FORMAT = "websd-subgroup-matrix-kernels";
const KERNELS_VERSION = 2;

/** A subgroup-matrix kernels file (stages/lib/subgroup_matrix.py) -> {kernel name: {wgsl, workgroups_x}}; a
 * FormatError naming `url` if it is not one. */
export function checkSubgroupMatrixKernels(file, url) {
  const isRecord = (r) => typeof r?.wgsl === "string" && Number.isInteger(r.workgroups_x) && r.workgroups_x >= 1;
  if (file?.format !== KERNELS_FORMAT || file.version !== KERNELS_VERSION || typeof file.kernels !== "object" ||
      !Object.values(file.kernels).every(isRecord)) {
    throw new FormatError(`${url} is not a version ${KERNELS_VERSION} subgroup-matrix kernels file; rebuild the model`);
  }
  return file.kernels;
}

/**
 * Every file a model needs, in download order: [{url, sha256, bytes, kind}] (weight indexes also name their
 * `submodule`). Shards are listed once the tensor-cache files are known, so this takes the parsed caches
 * ({sub: cache}) when they are.
 */
export function modelFiles(manifest, manifestUrl) {
  const abs = (rec, kind) => ({ url: new URL(rec.path, manifestUrl).href, sha256: rec.sha256, bytes: rec.bytes, kind });
  return [
    abs(manifest.wasm, "library"),
    ...Object.values(manifest.tokenizers).flatMap((files) => Object.values(files)).map((r) => abs(r, "tokenizer")),
    ...Object.values(manifest.schedulers).map((r) => abs(r, "scheduler")),
    ...Object.entries(manifest.submodules).filter(([, s]) => s.params)
      .map(([sub, s]) => ({ ...abs(s.params, "weights-index"), submodule: sub })),
  ];
}

// Which of a submodule's libraries to run: "auto" takes each submodule's float16 library where the device
// has its features (shader-f16), with its subgroup-matrix (tensor-core) kernels where the device has those
// too; "float32" always the float32 one; "float16" insists on float16 and keeps TVM's own kernels;
// "subgroup-matrix" insists on float16 with the tensor-core kernels.
export const COMPUTES = ["auto", "float32", "float16", "subgroup-matrix"];

const halfLibraries = (manifest) => Object.values(manifest.submodules).map((s) => s.libraries.float16).filter(Boolean);

/** The WebGPU features the libraries `compute` may choose would use (requested when the adapter has them). */
export function wantedFeatures(manifest, compute = "auto") {
  if (compute === "float32") return [];
  const features = halfLibraries(manifest).flatMap((lib) => [...lib.features,
    ...(compute !== "float16" ? lib.subgroup_matrix?.features ?? [] : [])]);
  return [...new Set(features)];
}

/**
 * {submodule: library record + {compute, subgroupMatrix}}: the library each submodule runs on a device with
 * `features` (a set-like of feature names), and whether its subgroup-matrix kernels replace some of its own.
 * With compute "float16" or "subgroup-matrix", a device without the features they need gets a
 * MissingFeatureError.
 */
export function chooseLibraries(manifest, features, compute = "auto") {
  if (!COMPUTES.includes(compute)) throw new Error(`compute must be one of ${COMPUTES.join(", ")}, not ${compute}`);
  const has = (list) => list.every((f) => features.has(f));
  if (compute === "subgroup-matrix") {
    const records = halfLibraries(manifest).map((lib) => lib.subgroup_matrix).filter(Boolean);
    if (!records.length) {
      throw new MissingFeatureError("subgroup-matrix compute: this model has no subgroup-matrix kernels (its " +
        "products are too small for them, or it was built before them); use auto, float16 or float32 compute.");
    }
    const missing = [...new Set(records.flatMap((r) => r.features))].filter((f) => !features.has(f));
    if (missing.length) {
      throw new MissingFeatureError(`subgroup-matrix compute needs the WebGPU feature(s) ${missing.join(", ")}, which ` +
        "this GPU/browser does not offer (Chrome: chrome://flags/#enable-unsafe-webgpu; Dawn: the allow_unsafe_apis " +
        "toggle, and on NVIDIA vulkan_enable_f16_on_nvidia); use auto compute, which picks what the device has.");
    }
  }
  const chosen = {};
  for (const [sub, rec] of Object.entries(manifest.submodules)) {
    const half = rec.libraries.float16;
    const usable = half && has(half.features);
    if ((compute === "float16" || compute === "subgroup-matrix") && half && !usable) {
      throw new MissingFeatureError(`${compute} compute needs the WebGPU feature(s) ${half.features.join(", ")}, ` +
        "which this GPU/browser does not offer; use float32 compute (the default picks it by itself).");
    }
    const name = compute !== "float32" && usable ? "float16" : "float32";
    const tensorCores = name === "float16" && compute !== "float16" && Boolean(half.subgroup_matrix) &&
      has(half.subgroup_matrix.features);
    chosen[sub] = { ...rec.libraries[name], compute: name, subgroupMatrix: tensorCores };
  }
  return chosen;
}

/**
 * The largest GPU buffer the model needs with `libraries` (chooseLibraries): weights, prepared weights or
 * activations, in the libraries' dtypes (the build records each library's largest tensor).
 */
export const largestBuffer = (libraries) => Math.max(0, ...Object.values(libraries).map((lib) => lib.largest_tensor_bytes ?? 0));

/** The adapter's limit on one buffer: WebGPU refuses a larger one late and obscurely (a dropped dispatch). */
export const bufferLimit = (limits) => Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);

/**
 * A DeviceLimitError if the model's largest buffer with `libraries` exceeds what `limits` (an adapter's,
 * or {maxBufferSize, maxStorageBufferBindingSize}) allow: said before anything large is downloaded.
 */
export function checkBufferLimits(libraries, limits) {
  const largest = largestBuffer(libraries), limit = bufferLimit(limits);
  if (largest > limit) {
    const mb = (n) => `${Math.round(n / 2 ** 20)} MB`;
    throw new DeviceLimitError(`This model needs GPU buffers of ${mb(largest)}, but this GPU and browser allow at most ${mb(limit)}. ` +
      "Use a computer with a larger GPU, update the browser, or pick a smaller model.");
  }
}

/**
 * An adapter and a device fit for `manifest`, or a NoWebGPUError / MissingFeatureError saying what to do.
 * The device gets the features of the libraries `compute` may choose (see chooseLibraries) where the adapter
 * has them.
 */
export async function requestDevice(gpu, manifest = { required_features: [], submodules: {} }, optionalFeatures = [],
                                    compute = "auto") {
  if (!gpu) {
    throw new NoWebGPUError(
      "This browser does not offer WebGPU (navigator.gpu is missing). Use a current Chrome or Edge (113 or " +
        "newer), or Safari 26 / Firefox 141 and newer; on Linux, Chrome needs --enable-unsafe-webgpu and Vulkan " +
        "drivers. The page must be served over https or from localhost.",
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new NoWebGPUError(
      "WebGPU is present but no GPU adapter is available: the GPU may be blocklisted or its driver too old. " +
        "Update the graphics driver, check chrome://gpu (WebGPU should read 'Hardware accelerated'), or try " +
        "another browser.",
    );
  }
  const missing = (manifest.required_features ?? []).filter((f) => !adapter.features.has(f));
  if (missing.length) {
    throw new MissingFeatureError(
      `This model needs the WebGPU feature(s) ${missing.join(", ")}, which this GPU/browser does not offer; ` +
        "pick the float32 build of the model or another browser.",
    );
  }
  let device;
  try {
    const extra = [...new Set([...optionalFeatures, ...wantedFeatures(manifest, compute)])].filter((f) => adapter.features.has(f));
    device = await adapter.requestDevice({
      requiredLimits: deviceLimits(adapter),
      requiredFeatures: [...(manifest.required_features ?? []), ...extra],
    });
  } catch (err) {
    throw new NoWebGPUError(`The GPU adapter refused to create a device (${err.message}); close other GPU-heavy tabs and retry.`);
  }
  return { adapter, device };
}

/**
 * Loads the model described by `manifestUrl`. Options:
 *   gpu         navigator.gpu (browser) or the `webgpu` package's GPU object (Node)
 *   fetchFile   async (url, {sha256, bytes, kind}) -> Uint8Array (verified again here)
 *   onProgress  ({phase: "manifest"|"device"|"library"|"tokenizer"|"scheduler"|"weights"|"shaders"|"ready", ...};
 *               "shaders" comes with {done, total} libraries whose GPU pipelines are all made, amid "weights")
 *   onDeviceLost(DeviceLostError)
 *   makeParams  optional (handle, cache, cacheUrl, dtypes, {vm, transform}) -> tensors in the library's
 *               `dtypes`, instead of downloading shards: the benchmark makes full-size weights on the GPU
 *               machine itself (nothing that large can be carried there), as checkpoint tensors that the
 *               library's `transform` function (on `vm`) turns into the stored weights
 *   compute     "auto" (default: float16 libraries where the device has shader-f16, with their subgroup-matrix
 *               kernels where it has that feature too), "float32", "float16" or "subgroup-matrix" (COMPUTES)
 *   precompile  "auto" (default: on a GPU, not on a CPU adapter such as SwiftShader), true or false: create
 *               every kernel's pipeline during load (tvm.js compileShaders) rather than at its first dispatch
 *   optionalFeatures, onDevice(device)  for development tools (e.g. "timestamp-query" and a profiler)
 * The model's `libraries` says which library each submodule runs ({sub: {compute, prefix, ...}}).
 */
export async function loadModel({ manifestUrl, gpu, fetchFile, onProgress = () => {}, onDeviceLost, logger = () => {}, tvmjs,
                                  makeParams, compute = "auto", precompile = "auto", optionalFeatures = [], onDevice }) {
  const fetchVerified = async (url, opts = {}) => {
    const bytes = await fetchFile(url, opts);
    if (opts.sha256) await verify(bytes, opts.sha256, url);
    return bytes;
  };
  onProgress({ phase: "manifest" });
  const manifest = checkManifest(parseJSON(await fetchFile(manifestUrl, { kind: "manifest" }), manifestUrl), manifestUrl);
  const at = (rec) => new URL(rec.path, manifestUrl).href;

  onProgress({ phase: "device" });
  const { adapter, device } = await requestDevice(gpu, manifest, optionalFeatures, compute);
  let libraries;
  try {
    libraries = chooseLibraries(manifest, device.features, compute);
    checkBufferLimits(libraries, adapter.limits);
  } catch (err) {
    device.destroy();
    throw err;
  }
  onDevice?.(device);
  // "destroyed" is our own dispose(); anything else (a driver reset, a crash, memory pressure) is a loss.
  if (device.lost) deviceLoss(device).catch((err) => onDeviceLost?.(err));

  onProgress({ phase: "library" });
  const wasm = await fetchVerified(at(manifest.wasm), { ...manifest.wasm, kind: "library" });
  const handle = await instantiateLibrary(wasm, device, { logger, tvmjs });
  handle.adapter = adapter;
  handle.device = device;
  // The model holds the GPU object it came from: in Node, Dawn's instance lives only while the object the `webgpu`
  // package's create() returned is reachable, and a garbage collection otherwise destroys it under the device
  // (aborts and hangs, bench/subgroup_matrix_gemm.mjs found). navigator.gpu in a browser is held anyway.
  handle.gpuInstance = gpu;
  // The tensor-core kernels take the place of the library's own before any pipeline is made.
  for (const library of Object.values(libraries).filter((lib) => lib.subgroupMatrix)) {
    const rec = library.subgroup_matrix;
    const kernels = checkSubgroupMatrixKernels(parseJSON(await fetchVerified(at(rec), { ...rec, kind: "library" }), at(rec)), at(rec));
    replaceKernels(handle, kernels);
  }

  onProgress({ phase: "tokenizer" });
  const tokenizers = {};
  for (const [folder, files] of Object.entries(manifest.tokenizers)) {
    const [json, config] = await Promise.all(["tokenizer.json", "tokenizer_config.json"]
      .map((name) => fetchVerified(at(files[name]), { ...files[name], kind: "tokenizer" })));
    tokenizers[folder] = await loadTokenizer(json, config);
  }

  onProgress({ phase: "scheduler" });
  const schedulers = {};
  for (const [name, rec] of Object.entries(manifest.schedulers)) {
    schedulers[name] = parseJSON(await fetchVerified(at(rec), { ...rec, kind: "scheduler" }), at(rec));
  }

  const vms = {};
  const params = {};
  let shaders = Promise.resolve();
  try {
    for (const [sub, rec] of Object.entries(manifest.submodules)) vms[sub] = openVM(handle, libraries[sub].prefix);
    // Every kernel's compute pipeline, created ahead, asynchronously and all at once while the weights load:
    // created lazily, one at a time at its first dispatch, hundreds of them made the first image wait half a
    // minute on an H200.
    if (precompile === true || (precompile === "auto" && !softwareAdapter(adapter))) {
      shaders = compileShaders(handle, Object.values(vms), (done, total) => onProgress({ phase: "shaders", done, total }));
      shaders.catch(() => {});  // awaited below; a weight failure first must not leave it unhandled
    }
    for (const [sub, rec] of Object.entries(manifest.submodules)) {
      const library = libraries[sub];
      if (!rec.params) continue;
      onProgress({ phase: "weights", submodule: sub });
      const cacheUrl = at(rec.params);
      const cache = checkTensorCache(parseJSON(await fetchVerified(cacheUrl, { ...rec.params, kind: "weights-index" }), cacheUrl),
        { family: manifest.family, submodule: sub, url: cacheUrl });
      const [fn, info] = Object.entries(library.functions).find(([, f]) => f.num_params > 0);
      if (cache.metadata.param_names.length !== info.num_params || cache.metadata.function !== fn) {
        throw new FormatError(`${cacheUrl} does not match the library: ${cache.metadata.param_names.length} tensors for ` +
          `${cache.metadata.function}, the library's ${fn} takes ${info.num_params}; rebuild the model`);
      }
      const stored = makeParams
        ? await makeParams(handle, cache, cacheUrl, info.param_dtypes, { vm: vms[sub], transform: info.transform })
        : await loadTensorCache(handle, cache, cacheUrl, (url, o) => fetchVerified(url, { ...o, kind: "weights" }),
          info.param_dtypes);
      params[sub] = info.prepare ? prepareParams(handle, vms[sub], info.prepare, stored) : stored;
    }
    await shaders;
  } catch (err) {
    for (const list of Object.values(params)) for (const t of list) t.dispose();
    for (const vm of Object.values(vms)) vm.dispose();
    throw err;
  }
  onProgress({ phase: "ready" });
  const Pipeline = pipelineClass(manifest.family);
  return new Pipeline({ handle, manifest, libraries, vms, params, tokenizers, schedulers });
}

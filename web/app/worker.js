// The page's module worker: message plumbing over web/runtime/ (protocol.js lists the requests). Everything
// heavy happens here: downloads and hashing, compiling the library, uploading weights, denoising, PNG
// encoding; the page only draws. One model at a time, kept loaded across generations.
//
// Loading, in order (progress `phase` in brackets): the model's manifest [manifest]; the GPU, checked before
// any weight is fetched [device]; the weight indexes, which list the shards; every file into the cache,
// skipping complete cached copies, so a retry resumes where a failure stopped [files, download, file];
// then web/runtime/load.js from the cache, each file verified again [init].

import { AbortedError, DeviceLimitError } from "../runtime/errors.js";
import { checkManifest, chooseLibraries, loadModel, modelFiles, parseJSON, requestDevice } from "../runtime/load.js";
import { gpuTensorBytes } from "../runtime/params.js";
import { encodePNG } from "../runtime/png.js";
import { availableSteps } from "../runtime/schedulers/index.js";
import { AssetStore, fileLabel } from "./cache.js";
import { serve } from "./protocol.js";

const PARALLEL_DOWNLOADS = 3;

let current = null; // { modelUrl, model, info }
let lostError = null; // the DeviceLostError once the GPU device is gone
const controllers = new Map(); // request id -> AbortController

function track(id) {
  const controller = new AbortController();
  controllers.set(id, controller);
  return controller.signal;
}

const describeAdapter = (adapter) => ({
  ...Object.fromEntries(["vendor", "architecture", "device", "description"].map((k) => [k, adapter.info?.[k] ?? ""])),
  fallback: Boolean(adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter),
  limits: { maxBufferSize: adapter.limits.maxBufferSize, maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize },
});

// The manifest names the current files, so it comes from the network; the cached copy serves offline visits.
async function fetchManifest(store, url, signal) {
  const file = { url, kind: "manifest" };
  try {
    return await store.download(file, signal);
  } catch (err) {
    const cached = signal.aborted ? null : await store.stored(file);
    if (!cached) throw err;
    return cached;
  }
}

// Buffers beyond what the GPU can bind fail late and obscurely; say so before downloading the weights. Sizes on
// the GPU, not in the shards, for the libraries this device will run: float16-stored weights are widened to
// float32 for a float32 library, and the build records each library's largest tensor (at full size the
// attention scores, 1 GiB in float32, outgrow every weight).
function checkBufferLimits(indexes, adapter, libraries) {
  const largest = Math.max(
    ...indexes.flatMap(({ cache, url, sub }) => gpuTensorBytes(cache, url, Object.values(libraries[sub].functions)
      .find((f) => f.num_params > 0)?.param_dtypes)),
    ...Object.values(libraries).map((lib) => lib.largest_tensor_bytes ?? 0));
  const limit = Math.min(adapter.limits.maxBufferSize, adapter.limits.maxStorageBufferBindingSize);
  if (largest > limit) {
    const mb = (n) => `${Math.round(n / 2 ** 20)} MB`;
    throw new DeviceLimitError(`This model needs GPU buffers of ${mb(largest)}, but this GPU and browser allow at most ${mb(limit)}. ` +
      "Use a computer with a larger GPU, update the browser, or pick a smaller model.");
  }
}

async function load({ modelUrl }, { id, progress }) {
  if (current?.modelUrl === modelUrl && !lostError) return { value: current.info };
  unload();
  const signal = track(id);
  const label = (url) => fileLabel(url, modelUrl);
  const store = new AssetStore({ label, onProgress: (p) => progress({ phase: "download", ...p }) });
  const started = performance.now();
  try {
    progress({ phase: "manifest" });
    const manifestBytes = await fetchManifest(store, modelUrl, signal);
    const manifest = checkManifest(parseJSON(manifestBytes, label(modelUrl)), modelUrl);

    progress({ phase: "device" });
    const { adapter, device } = await requestDevice(navigator.gpu, manifest);
    const libraries = chooseLibraries(manifest, device.features);
    device.destroy(); // load.js asks for its own; this one only proves there is one

    const files = modelFiles(manifest, modelUrl);
    const indexes = [];
    for (const file of files.filter((f) => f.kind === "weights-index")) {
      await store.ensure(file, signal);
      const cache = parseJSON(await store.read(file, signal), label(file.url));
      indexes.push({ cache, url: label(file.url), sub: file.submodule });
      for (const shard of cache.records) {
        files.push({ url: new URL(shard.dataPath, file.url).href, sha256: shard.sha256, bytes: shard.nbytes, kind: "weights" });
      }
    }
    checkBufferLimits(indexes, adapter, libraries);

    progress({ phase: "files", files: files.map((f) => ({ url: f.url, name: label(f.url), bytes: f.bytes, kind: f.kind })) });
    // A few downloads at a time; on a failure the others still finish (and stay cached), then it is reported.
    const queue = [...files];
    const failures = [];
    await Promise.all(Array.from({ length: PARALLEL_DOWNLOADS }, async () => {
      for (let file; (file = queue.shift()) && !failures.length;) {
        try {
          const source = await store.ensure(file, signal);
          // (the weight indexes were fetched above, before the list existed)
          progress({ phase: "file", url: file.url, source: store.stats.network.includes(file.url) ? "network" : source });
        } catch (err) {
          failures.push(err);
          progress({ phase: "file", url: file.url, source: "failed" });
        }
      }
    }));
    if (failures.length) throw failures[0];

    progress({ phase: "init", step: "library", downloadMs: performance.now() - started });
    const model = await loadModel({
      manifestUrl: modelUrl,
      gpu: navigator.gpu,
      fetchFile: (url, opts) => (opts.kind === "manifest" ? manifestBytes : store.read({ url, ...opts }, signal)),
      onProgress: (p) => p.phase !== "manifest" && progress({ phase: "init", step: p.phase, submodule: p.submodule }),
      onDeviceLost: (err) => {
        lostError = err;
        for (const controller of controllers.values()) controller.abort(err);
      },
      logger: () => {},
    });
    const info = {
      modelUrl,
      variant: manifest.variant,
      family: manifest.family,
      image: manifest.image,
      downloadBytes: files.reduce((n, f) => n + (f.bytes ?? 0), 0),
      schedulers: Object.fromEntries(Object.entries(model.schedulers).map(([name, consts]) => [name, availableSteps(consts)])),
      adapter: describeAdapter(model.handle.adapter),
      // the dtype each submodule computes in: float16 where the GPU has shader-f16 and the model a float16 library
      compute: Object.fromEntries(Object.entries(model.libraries).map(([sub, lib]) => [sub, lib.compute])),
      persistent: store.persistent,
      warning: store.quotaError?.message,
      network: store.stats.network.map(label),
      loadMs: performance.now() - started,
    };
    current = { modelUrl, model, info };
    lostError = null;
    return { value: info };
  } catch (err) {
    if (signal.aborted && err?.name === "AbortError") throw new AbortedError("Loading stopped; files downloaded so far are kept.");
    throw err;
  } finally {
    controllers.delete(id);
  }
}

async function generate({ settings, previewEvery = 0 }, { id, progress }) {
  if (lostError) throw lostError;
  if (!current) throw new Error("no model is loaded");
  const { model, info } = current;
  const signal = track(id);
  try {
    progress({ phase: "text" });
    const result = await model.generate({
      ...settings,
      previewEvery,
      signal,
      onStep: (s) => progress({ phase: "step", ...s }),
      onPreview: ({ step, rgba, width, height }) => progress({ phase: "preview", step, rgba, width, height }, [rgba.buffer]),
    });
    progress({ phase: "encode" });
    const png = await encodePNG(result.rgba, result.width, result.height, {
      prompt: settings.prompt, negative_prompt: settings.negative, seed: settings.seed, steps: settings.steps,
      scheduler: settings.scheduler, guidance: settings.guidance, model: info.variant,
      Software: "web-stable-diffusion (WebGPU)",
    });
    return { value: { png, width: result.width, height: result.height, timings: result.timings }, transfer: [png.buffer] };
  } catch (err) {
    throw lostError ?? err;
  } finally {
    controllers.delete(id);
  }
}

function unload() {
  if (!current) return { value: true };
  const { model } = current;
  current = null;
  try {
    model.dispose();
    model.handle.tvm.dispose(); // frees the GPU device too
  } catch {
    // after a lost device tvmjs has disposed the instance itself
  }
  return { value: true };
}

serve(self, {
  async probe() {
    const { adapter, device } = await requestDevice(navigator.gpu);
    device.destroy();
    return { value: describeAdapter(adapter) };
  },
  load,
  generate,
  abort: ({ target }) => {
    controllers.get(target)?.abort();
    return { value: true };
  },
  unload,
  // How the texts fit the loaded model's text encoder (tokenizer.js fit), or null with no model loaded.
  fit: ({ texts }) => ({ value: current ? texts.map((t) => current.model.tokenizer.fit(t)) : null }),
});

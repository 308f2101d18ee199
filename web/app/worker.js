// The page's module worker: message plumbing over web/runtime/ (protocol.js lists the requests). Everything
// heavy happens here: downloads and hashing, compiling the library, uploading weights, denoising, PNG
// encoding; the page only draws. One model at a time, kept loaded across generations.
//
// Loading, in order (progress `phase` in brackets): the model's manifest [manifest]; the GPU, checked before
// any weight is fetched [device]; the weight indexes, which list the shards; every file into the cache,
// skipping complete cached copies, so a retry resumes where a failure stopped [files, download, file];
// then web/runtime/load.js from the cache, each file verified again [init].

import { AbortedError } from "../runtime/errors.js";
import {
  bufferLimit, checkBufferLimits, checkManifest, chooseLibraries, largestBuffer, loadModel, modelFiles, parseJSON,
  requestDevice, schedulerNames,
} from "../runtime/load.js";
import { encodePNG } from "../runtime/png.js";
import { availableSteps } from "../runtime/schedulers/index.js";
import { AssetStore, fileLabel } from "./cache.js";
import { serve } from "./protocol.js";

const PARALLEL_DOWNLOADS = 3;

let current = null; // { modelUrl, model, info }
let probed = null; // the adapter probe found: describe reads its features and limits (reading needs no device)
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

// The manifest names the current files, so it comes from the network (through `via`, which keeps the copy when it
// is `store`); the copy in `store` serves offline visits.
async function fetchManifest(store, url, signal, via = store) {
  const file = { url, kind: "manifest" };
  try {
    return await via.download(file, signal);
  } catch (err) {
    const cached = signal?.aborted ? null : await store.stored(file);
    if (!cached) throw err;
    return cached;
  }
}

// What the page shows about a model before anything of it is downloaded, and whether this GPU can run it: the
// manifest alone, checked by the runtime (an unknown family is a FormatError), against the adapter's features and
// limits (a DeviceLimitError when its buffers are too small). The manifest is not kept in the cache here: a cached
// manifest is what marks a model as downloaded before (main.js startModel). No device is made: the adapter (the
// probe's, else a new one) says enough.
async function describe({ modelUrl }) {
  const label = (url) => fileLabel(url, modelUrl);
  const bytes = await fetchManifest(new AssetStore({ label }), modelUrl, undefined, new AssetStore({ label, caches: null }));
  const manifest = checkManifest(parseJSON(bytes, label(modelUrl)), modelUrl);
  const adapter = probed ?? await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) await requestDevice(navigator.gpu); // throws the NoWebGPUError that says what to do
  const libraries = chooseLibraries(manifest, adapter.features);
  checkBufferLimits(libraries, adapter.limits);
  return {
    value: {
      variant: manifest.variant,
      family: manifest.family,
      image: manifest.image,
      schedulers: schedulerNames(manifest),
      downloadBytes: manifest.download_bytes,
      largestBuffer: largestBuffer(libraries),
      bufferLimit: bufferLimit(adapter.limits),
    },
  };
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
    device.destroy(); // load.js asks for its own; this one only proves there is one
    checkBufferLimits(chooseLibraries(manifest, device.features), adapter.limits);

    const files = modelFiles(manifest, modelUrl);
    for (const file of files.filter((f) => f.kind === "weights-index")) {
      await store.ensure(file, signal);
      const cache = parseJSON(await store.read(file, signal), label(file.url));
      for (const shard of cache.records) {
        files.push({ url: new URL(shard.dataPath, file.url).href, sha256: shard.sha256, bytes: shard.nbytes, kind: "weights" });
      }
    }

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
      onProgress: (p) => p.phase !== "manifest" && progress({ phase: "init", step: p.phase, submodule: p.submodule,
                                                                  done: p.done, total: p.total }),
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
      // submodules whose float16 library runs its tensor-core (subgroup-matrix) kernels
      tensorCores: Object.entries(model.libraries).filter(([, lib]) => lib.subgroupMatrix).map(([sub]) => sub),
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
    probed = adapter;
    return { value: describeAdapter(adapter) };
  },
  load,
  generate,
  abort: ({ target }) => {
    controllers.get(target)?.abort();
    return { value: true };
  },
  unload,
  describe,
  // How the texts fit the loaded model's text encoders (pipeline.js fit), or null with no model loaded.
  fit: ({ texts }) => ({ value: current ? texts.map((t) => current.model.fit(t)) : null }),
});

// The page: owns the DOM and nothing else. Settings come from the form and the URL; the work is done by
// worker.js (protocol.js lists the requests); this file turns its progress into words, bars and previews.
//
// States (body[data-state]): loading (configuration, GPU check, model download and set-up), idle (a large
// model waits for the user to start its download), ready, generating, done, error.
// window.websd: generate(options) -> PNG data URL, load(modelId), stop(), state, settings, model.

import { WorkerClient } from "./protocol.js";
import { cacheUsage, clearCaches } from "./cache.js";

const CONFIG_URL = "stable-diffusion-config.json";
const CONFIG_FORMAT = "websd-site-config";
const CONFIG_VERSION = 1;
const AUTO_LOAD_BYTES = 256 * 2 ** 20; // larger models wait for a click before downloading
// (The scheduler's default is the model's: its manifest's default_scheduler.)
const DEFAULTS = { prompt: "", negative: "", seed: null, steps: 20, scheduler: null, guidance: 7.5, preview: "auto", model: "" };
const SCHEDULER_LABELS = { dpm: "DPM-Solver++", euler: "Euler", pndm: "PNDM" };
const MAX_SEED = Number.MAX_SAFE_INTEGER;

const $ = (id) => document.getElementById(id);
const el = {
  form: $("controls"), prompt: $("prompt"), negative: $("negative"), model: $("model"), scheduler: $("scheduler"),
  steps: $("steps"), guidance: $("guidance"), seed: $("seed"), preview: $("preview"), randomSeed: $("random-seed"),
  generate: $("generate"), stop: $("stop"), frame: $("frame"), result: $("result"), canvas: $("preview-canvas"), placeholder: $("placeholder"),
  status: $("status"), statusText: $("status-text"), bar: $("bar"), barFill: $("bar-fill"), detail: $("status-detail"),
  error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), errorHelp: $("error-help"), retry: $("retry"),
  resultActions: $("result-actions"), download: $("download"), copyLink: $("copy-link"), notices: $("notices"),
  promptFit: $("prompt-fit"), negativeFit: $("negative-fit"), modelInfo: $("model-info"),
  files: $("files"), filesSummary: $("files-summary"), fileList: $("file-list"),
  cacheStatus: $("cache-status"), clearCache: $("clear-cache"), gpuInfo: $("gpu-info"), dev: $("dev"),
};

const params = new URLSearchParams(location.search);
const DEV = params.get("dev") === "1";

const app = {
  config: null,
  client: null,
  adapter: null,
  model: null, // info of the loaded model (worker.js load())
  modelId: null, // the config id of the loaded (or loading) model
  described: null, // {id, ...worker.js describe()}: the selected model, as its manifest says, before any download
  loading: null, // promise of the running load
  job: null, // the running request (load or generate), for Stop
  lastTimings: new Map(), // model id -> timings of its last generation (ETA and auto previews)
  lastImage: null, // {blob, url, settings}
  retry: null, // what Retry does
  dev: null,
};

// ---- small helpers -----------------------------------------------------------------------------------

class ConfigError extends Error {
  name = "ConfigError";
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return "?";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) v /= 1024, i++;
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function formatSeconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
// The first step of a session also compiles the GPU kernels; it says little about the others.
const typicalStep = (steps) => (steps.length > 1 ? median(steps.slice(1)) : steps[0]);

// What a screen reader hears: one line per change of state, not every progress tick.
const ANNOUNCE = { loading: "Loading the model.", idle: "Ready to download the model.", ready: "The model is ready.",
                   generating: "Generating the image.", done: "The image is ready.", error: "" };

function setState(state) {
  if (document.body.dataset.state !== state && state !== "error") $("announce").textContent = ANNOUNCE[state];
  document.body.dataset.state = state;
  const busy = state === "loading" || state === "generating";
  // After an error, Generate stays usable when it can help: a model or at least a GPU is there.
  el.generate.disabled = busy || !app.config || !app.adapter;
  el.stop.disabled = !app.job;
  el.model.disabled = busy;
  el.generate.textContent = state === "idle" ? "Download and generate" : "Generate";
}

function status(text, detail = "") {
  el.statusText.textContent = text;
  el.detail.textContent = detail;
}

function bar(fraction) {
  if (fraction === null) {
    el.bar.hidden = true;
    return;
  }
  el.bar.hidden = false;
  el.bar.classList.toggle("indeterminate", fraction === undefined);
  el.barFill.style.setProperty("width", fraction === undefined ? "" : `${(100 * Math.min(1, fraction)).toFixed(1)}%`);
}

// ---- settings: form <-> URL ---------------------------------------------------------------------------

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

function readSettings() {
  return {
    prompt: el.prompt.value,
    negative: el.negative.value,
    seed: Number(el.seed.value),
    steps: Number(el.steps.value),
    scheduler: el.scheduler.value,
    guidance: Number(el.guidance.value),
    model: el.model.value,
    preview: el.preview.value,
  };
}

function writeSettings(s) {
  for (const key of ["prompt", "negative", "seed", "steps", "scheduler", "guidance", "preview"]) {
    if (s[key] === undefined || s[key] === null) continue;
    // A select keeps its value when the URL names an option it does not have.
    if (el[key] instanceof HTMLSelectElement && ![...el[key].options].some((o) => o.value === String(s[key]))) continue;
    el[key].value = String(s[key]);
  }
  if (s.model && app.config?.models.some((m) => m.id === s.model)) el.model.value = s.model;
}

const selectValues = (select) => [...select.options].map((o) => o.value);

/**
 * The link's settings, each one the page can use: {settings, notices}. A value that cannot be used (a negative
 * step count, a seed that is not a whole number) is replaced, and a notice says which, why (the form's own rules:
 * validate, and the options of its menus), and what stands instead. Models are checked once the configuration is
 * read (modelNotices), schedulers once the model's manifest is (describeModel).
 */
function settingsFromURL() {
  const settings = {}, notices = [];
  const notice = (key, why, fallback) =>
    notices.push(`${key}=${JSON.stringify(shorten(params.get(key)))} in the link: ${why}; using ${fallback}.`);
  for (const key of ["prompt", "negative"]) if (params.has(key)) settings[key] = params.get(key);
  const fallbacks = { seed: randomSeed(), steps: DEFAULTS.steps, guidance: DEFAULTS.guidance };
  const numbers = Object.fromEntries(Object.keys(fallbacks).filter((key) => params.has(key))
    .map((key) => [key, params.get(key).trim() === "" ? NaN : Number(params.get(key))]));
  const problems = validate({ ...DEFAULTS, ...fallbacks, ...numbers });
  for (const [key, value] of Object.entries(numbers)) {
    // "Steps must be ... 50." -> "steps must be ... 50", to sit inside the notice's sentence.
    if (problems[key]) notice(key, problems[key][0].toLowerCase() + problems[key].slice(1).replace(/\.$/, ""), fallbacks[key]);
    settings[key] = problems[key] ? fallbacks[key] : value;
  }
  if (params.has("preview")) {
    const options = selectValues(el.preview);
    if (options.includes(params.get("preview"))) settings.preview = params.get("preview");
    else notice("preview", `previews are ${options.join(", ")}`, DEFAULTS.preview);
  }
  return { settings, notices };
}

/** The notice for a link's scheduler that the described model does not offer (none if it does, or none is named). */
function schedulerNotices() {
  const wanted = params.get("scheduler"), { id, schedulers } = app.described;
  if (wanted === null || schedulers.includes(wanted)) return [];
  return [`scheduler=${JSON.stringify(shorten(wanted))} in the link: ${id}'s schedulers are ${schedulers.join(", ")}; using ${schedulers[0]}.`];
}

function shorten(text, max = 40) {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** Notices for the link's model: none if the site has it (or the link names none). */
function modelNotices() {
  const wanted = params.get("model");
  if (wanted === null || app.config.models.some((m) => m.id === wanted)) return [];
  return [`model=${JSON.stringify(shorten(wanted))} in the link: this site has ${app.config.models.map((m) => m.id).join(", ")}; using ${el.model.value}.`];
}

/** Shows what was corrected (or hides the list), and puts the corrected settings in the address bar, so a reload
 * does not repeat the problem. */
function showNotices(notices) {
  el.notices.replaceChildren(...notices.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  el.notices.hidden = notices.length === 0;
  if (notices.length) history.replaceState(null, "", shareURL(readSettings()));
}

/** Problems with the settings, as {field: message}; empty when they can be used. */
function validate(s) {
  const problems = {};
  if (!Number.isSafeInteger(s.seed) || s.seed < 0 || s.seed > MAX_SEED) problems.seed = "The seed must be a whole number, 0 or more.";
  const stepsAllowed = app.model?.schedulers?.[s.scheduler];
  if ((app.model && !stepsAllowed) || (app.described && !app.described.schedulers.includes(s.scheduler))) {
    problems.scheduler = `This model has no ${s.scheduler} scheduler.`;
  }
  const [lo, hi] = stepsAllowed ? [stepsAllowed[0], stepsAllowed[stepsAllowed.length - 1]] : [1, 50];
  if (!Number.isInteger(s.steps) || s.steps < lo || s.steps > hi) problems.steps = `Steps must be a whole number from ${lo} to ${hi}.`;
  // (Below 1 diffusers switches guidance off, which the compiled UNet cannot; 1 = the prompt alone.)
  if (!Number.isFinite(s.guidance) || s.guidance < 1 || s.guidance > 30) problems.guidance = "Guidance must be a number from 1 to 30.";
  return problems;
}

function shareURL(s) {
  const url = new URL(location.href);
  url.search = "";
  const q = url.searchParams;
  q.set("prompt", s.prompt);
  if (s.negative) q.set("negative", s.negative);
  q.set("seed", s.seed);
  q.set("steps", s.steps);
  if (s.scheduler) q.set("scheduler", s.scheduler); // (none before the model is described)
  q.set("guidance", s.guidance);
  q.set("model", s.model);
  if (s.preview !== DEFAULTS.preview) q.set("preview", s.preview);
  if (DEV) q.set("dev", "1");
  return url.href;
}

// ---- configuration -------------------------------------------------------------------------------------

async function loadConfig() {
  let response;
  try {
    response = await fetch(CONFIG_URL, { cache: "no-cache" });
  } catch (err) {
    throw new ConfigError(`The site's configuration (${CONFIG_URL}) could not be fetched: ${err.message}.`);
  }
  if (!response.ok) {
    throw new ConfigError(`The site's configuration (${CONFIG_URL}) is missing (HTTP ${response.status}). The deployment must ` +
      "place a copy of web/local-config.json or web/gh-page-config.json there; `make site` does it.");
  }
  let config;
  try {
    config = JSON.parse(await response.text());
  } catch (err) {
    throw new ConfigError(`The site's configuration (${CONFIG_URL}) is not valid JSON: ${err.message}.`);
  }
  const bad = (what) => new ConfigError(`The site's configuration (${CONFIG_URL}) is malformed: ${what}.`);
  if (config?.format !== CONFIG_FORMAT || config?.version !== CONFIG_VERSION) {
    throw bad(`expected format "${CONFIG_FORMAT}" version ${CONFIG_VERSION}, found ${JSON.stringify(config?.format)} version ${config?.version}`);
  }
  if (!Array.isArray(config.models) || config.models.length === 0) throw bad("it lists no models");
  const ids = new Set();
  for (const [i, m] of config.models.entries()) {
    for (const key of ["id", "label", "model_url"]) {
      if (typeof m?.[key] !== "string" || !m[key]) throw bad(`model ${i + 1} has no "${key}"`);
    }
    if (ids.has(m.id)) throw bad(`the model id "${m.id}" appears twice`);
    ids.add(m.id);
    m.url = new URL(m.model_url, response.url).href;
  }
  return config;
}

const currentModel = () => app.config?.models.find((m) => m.id === el.model.value);

/**
 * Reads the selected model's manifest (through the worker, which refuses a model this GPU cannot run, before
 * anything is downloaded) and fits the form to it: its schedulers, the default first (the current choice stays
 * if the model has it), and the frame to its image shape; says under the model menu what it takes. Sets
 * app.described.
 */
async function describeModel() {
  const entry = currentModel();
  app.described = null;
  el.modelInfo.textContent = "";
  const info = { id: entry.id, ...(await app.client.call("describe", { modelUrl: entry.url })) };
  if (currentModel() !== entry) return; // another model was chosen meanwhile; its description follows
  app.described = info;
  const previous = el.scheduler.value;
  el.scheduler.replaceChildren(...info.schedulers.map((name) =>
    Object.assign(document.createElement("option"), { value: name, textContent: SCHEDULER_LABELS[name] ?? name })));
  el.scheduler.value = info.schedulers.includes(previous) ? previous : info.schedulers[0];
  const { width, height } = info.image;
  el.frame.style.setProperty("--image-aspect", `${width} / ${height}`);
  el.modelInfo.textContent = `${width}×${height} images · ${formatBytes(downloadBytes(entry))} to download · ` +
    `GPU buffers up to ${formatBytes(info.largestBuffer)} (this GPU allows ${formatBytes(info.bufferLimit)})`;
}

// What the site's assembly counted (every file, small ones included), else the manifest's own figure.
const downloadBytes = (entry) => entry.download_bytes ?? app.described?.downloadBytes;

// ---- errors ---------------------------------------------------------------------------------------------

// load.js's messages say which browsers work; these add what to check next.
const WEBGPU_HELP = [
  "Check chrome://gpu (about:support in Firefox): WebGPU should read \"Hardware accelerated\". Updating the graphics driver often fixes it.",
  "Laptops with two GPUs: let the browser use the dedicated one (in the operating system's graphics settings).",
];

const ERROR_KINDS = {
  NoWebGPUError: { title: "WebGPU is not available", help: WEBGPU_HELP, action: "reload" },
  MissingFeatureError: { title: "This GPU cannot run this model", help: WEBGPU_HELP.slice(0, 1), action: "reload" },
  DeviceLimitError: { title: "This GPU cannot run this model", action: null },
  DeviceLostError: { title: "The GPU stopped responding", help: ["Retry sets the model up on the GPU again (its files are kept) and generates.", "If it happens again, close other tabs or apps that use the GPU."], action: "retry" },
  FetchError: { title: "A download failed", help: ["Files that already arrived are kept; Retry fetches the rest."], action: "retry" },
  IntegrityError: { title: "A file arrived damaged", help: ["The damaged copy was thrown away; Retry downloads it again."], action: "retry" },
  FormatError: { title: "The model files do not match this page", help: ["The site may be half-updated: reload in a minute. If it persists, the model needs rebuilding."], action: "retry" },
  QuotaError: { title: "Not enough storage", action: "retry" },
  ConfigError: { title: "The site is not configured", action: "reload" },
  ScheduleError: { title: "These settings cannot be used", action: null },
  AbortedError: { title: "Loading stopped", action: "retry" },
};

function showError(err, retry) {
  const kind = ERROR_KINDS[err.name] ?? { title: "Something went wrong", action: "retry" };
  app.retry = kind.action === "retry" ? retry : kind.action === "reload" ? () => location.reload() : null;
  el.errorTitle.textContent = kind.title;
  el.errorMessage.textContent = err.message;
  el.errorHelp.replaceChildren(...(kind.help ?? []).map((h) => Object.assign(document.createElement("li"), { textContent: h })));
  el.retry.hidden = !app.retry;
  el.retry.textContent = kind.action === "reload" ? "Reload the page" : "Retry";
  el.error.hidden = false;
  el.status.hidden = true; // the card says it
  $("announce").textContent = `${kind.title}. ${err.message}`;
  setState("error");
  if (DEV) console.error(err, err.workerStack ?? "");
  if (matchMedia("(max-width: 860px)").matches) el.frame.scrollIntoView({ block: "start", behavior: "smooth" });
  if (app.retry) el.retry.focus({ preventScroll: true });
}

function hideError() {
  el.error.hidden = true;
  el.status.hidden = false;
  app.retry = null;
}

// ---- loading a model --------------------------------------------------------------------------------------

const LOAD_STEPS = {
  manifest: "Reading the model description…",
  device: "Checking the GPU…",
  library: "Compiling the GPU program…",
  tokenizer: "Preparing the text encoder…",
  scheduler: "Preparing the schedulers…",
  weights: "Moving weights onto the GPU",
  shaders: "Compiling the GPU kernels",
  ready: "Finishing…",
};

/** Per-file download table and the bytes total. */
class Downloads {
  constructor(files) {
    this.files = new Map(files.map((f) => [f.url, { ...f, loaded: 0, state: "waiting" }]));
    this.total = files.reduce((n, f) => n + (f.bytes ?? 0), 0);
    this.started = performance.now();
    this.networkBytes = 0;
    el.fileList.replaceChildren(...files.map((f) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="name"></span><span class="size"></span><span class="mini"><span></span></span>';
      li.querySelector(".name").textContent = f.name;
      li.querySelector(".size").textContent = formatBytes(f.bytes);
      this.files.get(f.url).li = li;
      return li;
    }));
    el.files.hidden = false;
  }

  update(url, patch) {
    const f = this.files.get(url);
    if (!f) return;
    if (patch.loaded !== undefined) this.networkBytes += patch.loaded - f.loaded;
    Object.assign(f, patch);
    if (f.state === "cached" || f.state === "network") f.loaded = f.bytes;
    f.li.dataset.state = f.state;
    f.li.querySelector(".mini span").style.setProperty("width", `${(100 * (f.loaded / (f.bytes || 1))).toFixed(0)}%`);
    f.li.querySelector(".size").textContent = f.state === "downloading"
      ? `${formatBytes(f.loaded)} of ${formatBytes(f.bytes)}`
      : f.state === "cached" ? `${formatBytes(f.bytes)}, cached` : f.state === "failed" ? "failed" : formatBytes(f.bytes);
    if (f.state === "failed") el.fileList.scrollTop = f.li.offsetTop - el.fileList.offsetTop; // show it in the list
    this.render();
  }

  render() {
    const all = [...this.files.values()];
    const loaded = all.reduce((n, f) => n + f.loaded, 0);
    const done = all.filter((f) => f.state === "cached" || f.state === "network").length;
    const cached = all.filter((f) => f.state === "cached").length;
    const seconds = (performance.now() - this.started) / 1000;
    const speed = seconds > 1 && this.networkBytes > 0 ? ` · ${formatBytes(this.networkBytes / seconds)}/s` : "";
    status(`Downloading the model: ${formatBytes(loaded)} of ${formatBytes(this.total)} (${Math.floor((100 * loaded) / (this.total || 1))}%)`,
      `${done} of ${all.length} files${cached ? `, ${cached} from the browser cache` : ""}${speed}`);
    el.filesSummary.textContent = `Files: ${done} of ${all.length} ready`;
    bar(loaded / (this.total || 1));
  }
}

function loadModel(id) {
  if (app.loading && app.modelId === id) return app.loading;
  const entry = app.config.models.find((m) => m.id === id);
  if (!entry) return Promise.reject(new ConfigError(`No model "${id}" in the configuration.`));
  hideError();
  app.modelId = id;
  app.model = null;
  setState("loading");
  let downloads = null;
  const started = performance.now();
  const request = app.client.call("load", { modelUrl: entry.url }, {
    onProgress: (p) => {
      if (p.phase === "files") downloads = new Downloads(p.files);
      else if (p.phase === "download") downloads?.update(p.url, { loaded: p.loaded, state: "downloading" });
      else if (p.phase === "file") downloads?.update(p.url, { state: p.source });
      else if (p.phase === "init") {
        const detail = p.submodule ? `: ${p.submodule}…` : p.total ? `: ${p.done} of ${p.total} parts ready…` : "";
        status(LOAD_STEPS[p.step] + detail, `${entry.label}: setting up on the GPU`);
        bar(undefined);
      } else if (LOAD_STEPS[p.phase]) {
        status(LOAD_STEPS[p.phase], entry.label);
        bar(undefined);
      }
    },
  });
  app.job = request;
  setState("loading"); // (Stop is enabled from here)
  const loading = request.then((info) => {
    app.model = info;
    app.job = null;
    el.files.open = false;
    const steps = info.schedulers[el.scheduler.value];
    if (steps) el.steps.max = steps[steps.length - 1];
    bar(null);
    const computes = [...new Set(Object.values(info.compute ?? {}))];
    status(`${entry.label} is ready`, `Loaded in ${formatSeconds(performance.now() - started)}` +
      (computes.includes("float16") ? ", computing in float16 (this GPU has shader-f16)" : "") +
      (info.tensorCores?.length ? ` with tensor cores (subgroup matrices) in the ${info.tensorCores.join(", ")}` : "") +
      (info.warning ? `. ${info.warning}` : info.persistent ? "; kept in this browser for next time." : "."));
    setState("ready");
    schedulePromptFit();
    app.dev?.modelLoaded(info);
    refreshCacheStatus();
    return info;
  }, (err) => {
    app.job = null;
    app.loading = null;
    refreshCacheStatus();
    throw err;
  });
  app.loading = loading;
  return loading;
}

// ---- generating -----------------------------------------------------------------------------------------

function previewEvery(setting, steps, timings) {
  if (setting !== "auto") return Number(setting) || 0;
  if (!timings) return 0;
  // Decode a preview when it costs at most a quarter of the steps it covers.
  const every = Math.max(1, Math.ceil((4 * timings.vae) / typicalStep(timings.steps)));
  return every < steps ? every : 0;
}

function showPreview({ rgba, width, height }) {
  el.canvas.width = width;
  el.canvas.height = height;
  el.canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer ?? rgba), width, height), 0, 0);
  el.canvas.hidden = false;
  el.result.hidden = true;
  el.placeholder.hidden = true;
}

function showImage(blob, settings, width, height) {
  if (app.lastImage) URL.revokeObjectURL(app.lastImage.url);
  const url = URL.createObjectURL(blob);
  app.lastImage = { blob, url, settings };
  el.result.src = url;
  el.result.width = width;
  el.result.height = height;
  el.result.alt = settings.prompt ? `Generated image: ${settings.prompt}` : "Generated image";
  el.result.hidden = false;
  el.canvas.hidden = true;
  el.placeholder.hidden = true;
  el.download.href = url;
  const slug = settings.prompt.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "image";
  el.download.download = `${slug}-${settings.seed}.png`;
  el.resultActions.hidden = false;
}

const blobToDataURL = (blob) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(blob);
});

async function generate(overrides = {}) {
  if (app.job) throw new Error("busy: a model is loading or an image is being generated");
  writeSettings(overrides);
  if (app.described?.id !== el.model.value) {
    await describeModel();
    writeSettings(overrides); // the scheduler, among the new model's
  }
  const settings = readSettings();
  const problems = validate(settings);
  if (Object.keys(problems).length) {
    const [field, message] = Object.entries(problems)[0];
    el[field].setCustomValidity(message);
    el[field].reportValidity();
    // Whatever was on its way (a link's autorun, say) ends here, and the page is usable: fix, then Generate.
    status("Fix the marked setting, then press Generate.", message);
    bar(null);
    setState(app.model ? (app.lastImage ? "done" : "ready") : "idle");
    throw Object.assign(new Error(message), { name: "ScheduleError" });
  }
  history.replaceState(null, "", shareURL(settings));
  hideError();
  if (!app.model || app.modelId !== settings.model) await loadModel(settings.model);

  const { model: modelId, preview, ...run } = settings;
  const timings = app.lastTimings.get(modelId);
  const every = previewEvery(preview, run.steps, timings);
  setState("generating");
  const firstRun = !timings;
  status(`Step 1 of ${run.steps}`, firstRun ? "The first image also prepares the GPU kernels, which takes longer." : "");
  bar(0);
  el.resultActions.hidden = true;
  el.placeholder.textContent = every ? "The first preview appears after a few steps." : "Previews are off: the image appears when it is done.";
  // On a phone the form sits above the image: bring the progress into view.
  if (matchMedia("(max-width: 860px)").matches) el.frame.scrollIntoView({ block: "start", behavior: "smooth" });
  const started = performance.now();
  const stepTimes = [];
  const request = app.client.call("generate", { settings: run, previewEvery: every }, {
    onProgress: (p) => {
      if (p.phase === "step") {
        // p.step steps are done; the status names the one running now.
        stepTimes.push(p.ms);
        const title = p.step < p.total ? `Step ${p.step + 1} of ${p.total}` : "Decoding the image…";
        bar(p.step / p.total);
        if (firstRun && stepTimes.length === 1 && p.step < p.total) {
          // Its first step also compiled the kernels: no basis for an estimate yet.
          status(title, `The first step took ${formatSeconds(p.ms)}, preparing the GPU kernels; estimating the time left…`);
          return;
        }
        const perStep = stepTimes.length > 1 ? typicalStep(stepTimes) : timings ? typicalStep(timings.steps) : p.ms;
        const vae = timings?.vae ?? 2 * perStep;
        const previewsLeft = every ? Math.floor((p.total - 1) / every) - Math.floor(p.step / every) : 0;
        const left = (p.total - p.step) * perStep + vae * (1 + previewsLeft);
        status(title, `${(perStep / 1000).toFixed(perStep < 1000 ? 2 : 1)} s per step · about ${formatSeconds(left)} left`);
      } else if (p.phase === "preview") {
        showPreview(p);
      } else if (p.phase === "encode") {
        status("Saving the image…", "");
      }
    },
  });
  app.job = request;
  setState("generating");
  try {
    const result = await request;
    app.lastTimings.set(modelId, result.timings);
    const blob = new Blob([result.png], { type: "image/png" });
    showImage(blob, settings, result.width, result.height);
    bar(null);
    status("Done", `${result.width}×${result.height} in ${formatSeconds(performance.now() - started)} ` +
      `(${run.steps} steps, ${(typicalStep(result.timings.steps) / 1000).toFixed(2)} s each)`);
    app.dev?.generated(settings, result.timings);
    app.job = null;
    setState("done");
    return blob;
  } catch (err) {
    app.job = null;
    if (err.name === "DeviceLostError") {
      // The model's GPU memory went with the device: the next generate (Retry) loads it again from the kept files.
      app.model = null;
      app.loading = null;
    }
    if (err.name === "AbortedError") {
      bar(null);
      status("Stopped", "Generate to start again.");
      el.canvas.hidden = true;
      el.result.hidden = !app.lastImage;
      el.placeholder.hidden = Boolean(app.lastImage);
      el.resultActions.hidden = !app.lastImage;
      setState(app.lastImage ? "done" : "ready");
    }
    throw err;
  }
}

function stop() {
  if (app.job) app.client.call("abort", { target: app.job.id });
}

// The form's Generate: errors are shown, never thrown.
function onGenerate(overrides) {
  const action = () => generate(overrides).catch((err) => {
    if (err.name !== "AbortedError" && err.name !== "ScheduleError") showError(err, action);
  });
  return action();
}

// ---- prompt length ---------------------------------------------------------------------------------------

/** Says under each prompt box when the text encoder will not read all of it, and from where, as the loaded
 * model's tokenizer counts (the worker has it; nothing is said before a model is loaded). */
async function checkPromptFit() {
  if (!app.model || !app.client) return;
  const texts = [el.prompt.value, el.negative.value];
  const fits = await app.client.call("fit", { texts }).catch(() => null);
  if (!fits || texts[0] !== el.prompt.value || texts[1] !== el.negative.value) return; // a newer check follows
  for (const [fit, out] of [[fits[0], el.promptFit], [fits[1], el.negativeFit]]) {
    out.hidden = !fit.dropped;
    out.textContent = fit.dropped
      ? `${fit.tokens} tokens: the text encoder reads the first ${fit.max}, so “${shorten(fit.dropped, 60)}” is left out.`
      : "";
  }
}

let fitTimer = null;
function schedulePromptFit() {
  clearTimeout(fitTimer);
  fitTimer = setTimeout(checkPromptFit, 150);
}

// ---- cache status ---------------------------------------------------------------------------------------

async function refreshCacheStatus() {
  if (!globalThis.caches) {
    el.cacheStatus.textContent = "This browser offers no storage here, so the model downloads on every visit.";
    el.clearCache.hidden = true;
    return;
  }
  const { files, bytes } = await cacheUsage().catch(() => ({ files: 0, bytes: 0 }));
  el.cacheStatus.textContent = files ? `Model files kept in this browser: ${formatBytes(bytes)} (${files} files).` : "No model files are kept in this browser yet.";
  el.clearCache.hidden = files === 0;
}

let clearArmed = null;
async function onClearCache() {
  if (!clearArmed) {
    el.clearCache.textContent = "Click again to delete them";
    clearArmed = setTimeout(() => {
      clearArmed = null;
      el.clearCache.textContent = "Clear cache";
    }, 4000);
    return;
  }
  clearTimeout(clearArmed);
  clearArmed = null;
  el.clearCache.textContent = "Clear cache";
  await clearCaches();
  await refreshCacheStatus();
  el.cacheStatus.textContent += " The loaded model stays usable until the page is closed.";
}

// ---- start ------------------------------------------------------------------------------------------------

function wire() {
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!el.generate.disabled) onGenerate();
  });
  el.form.addEventListener("input", (event) => event.target.setCustomValidity?.(""));
  el.prompt.addEventListener("input", schedulePromptFit);
  el.negative.addEventListener("input", schedulePromptFit);
  el.form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      el.form.requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && app.job) stop();
  });
  el.stop.addEventListener("click", stop);
  el.randomSeed.addEventListener("click", () => {
    el.seed.value = randomSeed();
    el.seed.setCustomValidity("");
  });
  el.scheduler.addEventListener("change", () => {
    const steps = app.model?.schedulers?.[el.scheduler.value];
    if (steps) el.steps.max = steps[steps.length - 1];
  });
  el.model.addEventListener("change", () => {
    const entry = currentModel();
    const action = async () => {
      await describeModel();
      history.replaceState(null, "", shareURL(readSettings()));
      if (app.modelId === entry.id && app.model) return;
      await startModel(false);
    };
    action().catch((err) => showError(err, action));
  });
  el.retry.addEventListener("click", () => {
    const retry = app.retry;
    hideError();
    retry?.();
  });
  el.copyLink.addEventListener("click", async () => {
    const url = shareURL(app.lastImage?.settings ?? readSettings());
    try {
      await navigator.clipboard.writeText(url);
      el.copyLink.textContent = "Link copied";
    } catch {
      el.copyLink.textContent = "Copy failed: the link is in the address bar";
    }
    setTimeout(() => (el.copyLink.textContent = "Copy link to these settings"), 2500);
  });
  el.clearCache.addEventListener("click", onClearCache);
}

/** Loads the selected model now if it is small, cached or asked for; otherwise waits in `idle`. */
async function startModel(autorun) {
  const entry = currentModel();
  const cached = globalThis.caches ? Boolean(await caches.match(entry.url).catch(() => null)) : false;
  const bytes = downloadBytes(entry);
  const small = Number.isFinite(bytes) && bytes <= AUTO_LOAD_BYTES;
  if (!(small || cached)) {
    // Not even a shared link with autorun=1 starts a download of gigabytes without a click.
    app.model = null;
    app.modelId = null;
    status(`${entry.label}: ${formatBytes(bytes)} to download`,
      "The model is downloaded once and kept in this browser. Press Download and generate to start.");
    setState("idle");
    return;
  }
  if (autorun) return onGenerate();
  const action = () => loadModel(entry.id).catch((err) => showError(err, action));
  return action();
}

async function main() {
  wire();
  const fromURL = settingsFromURL();
  writeSettings({ ...DEFAULTS, seed: randomSeed(), ...fromURL.settings });
  if (DEV) {
    const { DevPanel } = await import("./dev.js");
    app.dev = new DevPanel(el.dev, app);
  }
  refreshCacheStatus();
  const start = async () => {
    setState("loading");
    status("Reading the site configuration…");
    app.config = await loadConfig();
    el.model.replaceChildren(...app.config.models.map((m) => {
      const label = Number.isFinite(m.download_bytes) ? `${m.label} (${formatBytes(m.download_bytes)})` : m.label;
      return Object.assign(document.createElement("option"), { value: m.id, textContent: label });
    }));
    const wanted = params.get("model");
    el.model.value = app.config.models.some((m) => m.id === wanted) ? wanted : (app.config.default_model ?? app.config.models[0].id);
    if (!el.model.value) el.model.value = app.config.models[0].id;
    const notices = [...fromURL.notices, ...modelNotices()];
    showNotices(notices);

    status("Checking the GPU…");
    app.client ??= new WorkerClient(new Worker(new URL("./worker.js", import.meta.url), { type: "module" }));
    app.adapter = await app.client.call("probe");
    const a = app.adapter;
    el.gpuInfo.textContent = `GPU: ${[a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unnamed adapter"}` +
      (a.fallback ? " (a software renderer: expect it to be very slow)" : "");
    app.dev?.adapter(a);
    status("Reading the model description…");
    await describeModel();
    if (params.has("scheduler")) writeSettings({ scheduler: params.get("scheduler") }); // if the model offers it
    notices.push(...schedulerNotices());
    showNotices(notices);
    // A link whose settings had to be corrected does not run by itself: the user sees the notice first.
    await startModel(params.get("autorun") === "1" && notices.length === 0);
  };
  try {
    await start();
  } catch (err) {
    showError(err, () => start().catch((e) => showError(e)));
  }
}

window.websd = {
  /** Generates with the form's settings overridden by `options`; resolves to the PNG as a data URL. */
  async generate(options = {}) {
    if (app.loading) await app.loading.catch(() => {});
    return blobToDataURL(await generate(options));
  },
  load: (id = el.model.value) => loadModel(id),
  stop,
  get state() {
    return document.body.dataset.state;
  },
  get settings() {
    return readSettings();
  },
  get model() {
    return app.model;
  },
};

main();

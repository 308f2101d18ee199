// Shared by the browser tests: the site served by deploy/serve.py, headless Chromium on SwiftShader driven by
// playwright-core, a request log per browser context, screenshots, and the PyTorch reference.
//
//   make test-browser        (assembles build/test-site with the tiny model, then runs tests/browser/*.test.mjs)
//
// TEST_SITE names the assembled site (default build/test-site), TEST_ARTIFACTS the build it holds (default
// build/test-artifacts: `make test-build`), whose weights the PyTorch reference reads. The site holds the tiny
// SD 1.5 (MODEL) and the tiny SDXL (sdxl.test.mjs). Screenshots and images go
// to test-results/browser/ (git-ignored).

import { execFile, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SITE = path.resolve(ROOT, process.env.TEST_SITE ?? "build/test-site");
export const ARTIFACTS = path.resolve(ROOT, process.env.TEST_ARTIFACTS ?? "build/test-artifacts");
export const RESULTS = path.join(ROOT, "test-results/browser");
export const MODEL = "sd15-tiny";
export const MODEL_DIR = `models/${MODEL}/`;
mkdirSync(RESULTS, { recursive: true });

const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader",
  "--use-webgpu-adapter=swiftshader", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run",
];

/** deploy/serve.py on `port` (0: a free one), serving `dir` (a site; with `files`, any folder; with `cors`, readable
 * from other origins): {url, port, close() -> promise of its exit}. */
export async function startServer({ dir = SITE, port = 0, files = false, cors = false } = {}) {
  const args = [path.join(ROOT, "deploy/serve.py"), "--dir", dir, "--port", String(port), "--quiet",
    ...(files ? ["--files"] : []), ...(cors ? ["--cors"] : [])];
  const child = spawn("python3", args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const url = await new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      const m = /serving (http\S+)/.exec(String(d));
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`serve.py exited (${code}): ${stderr}; run make test-browser (it assembles ${SITE})`)));
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  return { url, port: Number(new URL(url).port), close: () => { child.kill(); return exited; } };
}

export function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: false, args: CHROMIUM_ARGS });
}

/**
 * A fresh browser context (its own Cache API storage) and page. `requests` lists every URL path the page and
 * its worker asked of the server, in order; `foreign` every URL of another origin; `errors` collects page
 * errors and console errors.
 */
export async function openPage(browser, server, { viewport = { width: 1280, height: 860 }, initScript } = {}) {
  const context = await browser.newContext({ viewport });
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const requests = [];
  const foreign = []; // requests to any other origin (there must be none)
  const errors = [];
  const origin = new URL(server.url).origin;
  context.on("request", (r) => {
    const u = new URL(r.url());
    if (u.protocol === "blob:" || u.protocol === "data:") return; // made by the page itself (a blob's origin is its maker's)
    if (u.origin === origin) requests.push(u.pathname.slice(1));
    else foreign.push(u.href);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));
  page.setDefaultTimeout(240_000);
  return { context, page, requests, foreign, errors, url: server.url };
}

/** The site's configuration, as this context sees it, announces every model as a 4 GB download: the page then
 * waits for a click before downloading anything, whatever the link says. */
export async function announceLargeModels(context) {
  await context.route("**/stable-diffusion-config.json", async (route) => {
    const response = await route.fetch();
    const config = await response.json();
    for (const m of config.models) m.download_bytes = 4 * 2 ** 30;
    route.fulfill({ response, json: config });
  });
}

/** Requests for model files (paths under models/<variant>/), as paths relative to the variant folder. */
export const modelRequests = (requests, variant = MODEL) =>
  requests.filter((p) => p.startsWith(`models/${variant}/`)).map((p) => p.slice(`models/${variant}/`.length));

/** Model files downloaded: every request of modelRequests but the manifest, which the page reads to describe the
 * model (its size, schedulers, image size, GPU needs) before asking to download anything. */
export const modelDownloads = (requests, variant = MODEL) => modelRequests(requests, variant).filter((p) => p !== "model.json");

export async function waitForState(page, states, timeout = 240_000) {
  const wanted = [].concat(states);
  await page.waitForFunction((w) => w.includes(document.body.dataset.state), wanted, { timeout, polling: 100 });
  return page.evaluate(() => document.body.dataset.state);
}

export async function pageText(page) {
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status-text").textContent,
    detail: document.getElementById("status-detail").textContent,
    errorTitle: document.getElementById("error").hidden ? "" : document.getElementById("error-title").textContent,
    errorMessage: document.getElementById("error").hidden ? "" : document.getElementById("error-message").textContent,
    errorHelp: document.getElementById("error").hidden ? "" : document.getElementById("error-help").textContent,
  }));
}

export async function screenshot(page, name, options = {}) {
  const file = path.join(RESULTS, `${name}.png`);
  await page.screenshot({ path: file, ...options });
  return file;
}

/** The bytes of the image shown in #result. */
export async function resultPNG(page) {
  const b64 = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch(document.getElementById("result").src)).arrayBuffer());
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  });
  return Buffer.from(b64, "base64");
}

const run = promisify(execFile);
const PY = path.join(ROOT, ".venv/bin/python");

/** stages/reference.py (PyTorch/diffusers on the CPU) with the same settings, for the family of `variant` (a
 * folder of TEST_ARTIFACTS); returns the PNG path. */
export async function reference(s, name, variant = MODEL) {
  const out = path.join(RESULTS, `${name}.png`);
  const { family } = JSON.parse(await readFile(path.join(ARTIFACTS, variant, "model.json"), "utf8"));
  await run(PY, [path.join(ROOT, "stages/reference.py"), "--model", family, "--weights", path.join(ARTIFACTS, variant, "weights"),
    "--prompt", s.prompt, "--negative", s.negative, "--seed", String(s.seed), "--steps", String(s.steps),
    "--scheduler", s.scheduler, "--guidance", String(s.guidance), "--out", out], { cwd: ROOT, maxBuffer: 1 << 24 });
  return out;
}

/** PSNR (dB, over RGB) of two PNGs and their text chunks: {psnr, text_a, text_b, size_a, size_b}. */
export async function comparePNG(a, b) {
  const { stdout } = await run(PY, [path.join(ROOT, "tests/browser/compare_png.py"), a, b]);
  return JSON.parse(stdout);
}

export async function save(name, bytes) {
  const file = path.join(RESULTS, name);
  await writeFile(file, bytes);
  return file;
}

// What the page says when it cannot work, in headless Chromium (no generation, no model download):
//   1. no WebGPU (navigator.gpu removed in the page and its worker): guidance on what to enable, no stack
//      trace, and not one model file fetched
//   2. WebGPU without an adapter: the blocklist/driver advice; an adapter whose buffers are too small for the
//      model: said before the weights download
//   3. a missing or malformed stable-diffusion-config.json: a clear message naming the file
//   4. the GPU device lost during a generation: said so, and Retry sets the model up again and generates
//   5. the developer tools appear only with ?dev=1
//
//   make test-browser     (or: node --test tests/browser/capabilities.test.mjs, after assembling build/test-site)

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  announceLargeModels, launchBrowser, modelDownloads, modelRequests, openPage, pageText, screenshot, startServer, waitForState,
} from "./harness.mjs";

let server, browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.close();
});

// Init scripts run in pages, not in workers: the worker script gets the same line put in front of it.
async function withoutWebGPU(session, line) {
  await session.context.addInitScript(line);
  await session.context.route("**/app/worker.js", async (route) => {
    const response = await route.fetch();
    route.fulfill({ response, body: `${line}\n${await response.text()}` });
  });
}

const STACK = /\.js:\d+|at \w+ \(|TypeError|undefined/;

test("without WebGPU the page explains what to enable, before downloading anything", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  await withoutWebGPU(session, "if (self.Navigator) delete Navigator.prototype.gpu; if (self.WorkerNavigator) delete WorkerNavigator.prototype.gpu;");
  const { page, requests } = session;
  await page.goto(`${server.url}?model=sd15-tiny&autorun=1`);
  assert.equal(await waitForState(page, ["error", "ready", "generating"], 30_000), "error");
  const text = await pageText(page);
  assert.equal(text.errorTitle, "WebGPU is not available");
  assert.match(text.errorMessage, /navigator\.gpu is missing/);
  assert.match(text.errorMessage, /Chrome or Edge \(113 or newer\)/);
  assert.match(text.errorMessage, /enable-unsafe-webgpu/);
  assert.match(text.errorHelp, /chrome:\/\/gpu/);
  assert.doesNotMatch(text.errorMessage + text.errorHelp, STACK);
  assert.equal(await page.evaluate(() => document.getElementById("generate").disabled), true);
  assert.equal(await page.textContent("#retry"), "Reload the page");
  assert.deepEqual(modelRequests(requests), [], "no model file was fetched");
  await screenshot(page, "8-no-webgpu");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => document.getElementById("frame").scrollIntoView({ block: "start" }));
  await screenshot(page, "9-no-webgpu-phone");
  await session.context.close();
});

test("WebGPU without a GPU adapter gets the driver and blocklist advice", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  await withoutWebGPU(session, "if (self.GPU) GPU.prototype.requestAdapter = async () => null;");
  const { page, requests } = session;
  await page.goto(`${server.url}?model=sd15-tiny`);
  assert.equal(await waitForState(page, ["error", "ready"], 30_000), "error");
  const text = await pageText(page);
  assert.equal(text.errorTitle, "WebGPU is not available");
  assert.match(text.errorMessage, /no GPU adapter/);
  assert.doesNotMatch(text.errorMessage + text.errorHelp, STACK);
  assert.deepEqual(modelRequests(requests), []);
  await session.context.close();
});

test("a GPU whose buffers are too small for the model is told so before the weights download", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  // Every adapter reports 8 MB buffers; the tiny model's largest tensor (CLIP's token embedding) is 12 MB.
  await withoutWebGPU(session, `if (self.GPUAdapter) {
    const d = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, "limits");
    Object.defineProperty(GPUAdapter.prototype, "limits", { get() {
      const limits = d.get.call(this);
      return new Proxy(limits, { get: (t, k) => (k === "maxBufferSize" || k === "maxStorageBufferBindingSize" ? 8 << 20 : t[k]) });
    } });
  }`);
  const { page, requests } = session;
  await page.goto(`${server.url}?model=sd15-tiny`);
  assert.equal(await waitForState(page, ["error", "ready"], 30_000), "error");
  const text = await pageText(page);
  assert.equal(text.errorTitle, "This GPU cannot run this model");
  assert.match(text.errorMessage, /needs GPU buffers of 12 MB, but this GPU and browser allow at most 8 MB/);
  assert.deepEqual(modelRequests(requests).filter((p) => p.endsWith(".bin") || p.endsWith(".wasm")), [], "no weights or library fetched");
  await session.context.close();
});

for (const [what, body, status, expected] of [
  ["missing", "not found", 404, /stable-diffusion-config\.json\) is missing \(HTTP 404\)/],
  ["not JSON", "{ models: ", 200, /stable-diffusion-config\.json\) is not valid JSON/],
  ["of the wrong format", JSON.stringify({ format: "websd-site-config", version: 1, models: [{ id: "x" }] }), 200,
    /stable-diffusion-config\.json\) is malformed: model 1 has no "label"/],
]) {
  test(`a configuration that is ${what} gets a clear message`, { timeout: 60_000 }, async () => {
    const session = await openPage(browser, server);
    await session.context.route("**/stable-diffusion-config.json", (route) =>
      route.fulfill({ status, body, contentType: "application/json" }));
    const { page } = session;
    await page.goto(server.url);
    assert.equal(await waitForState(page, ["error", "ready"], 30_000), "error");
    const text = await pageText(page);
    assert.equal(text.errorTitle, "The site is not configured");
    assert.match(text.errorMessage, expected);
    if (what === "missing") await screenshot(page, "10-no-config");
    await session.context.close();
  });
}

test("a large model waits for a click before downloading; the click starts it", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  const { context, page, requests } = session;
  // The tiny model, announced as 4 GB.
  await announceLargeModels(context);
  await page.goto(`${server.url}?model=sd15-tiny&autorun=1`); // not even autorun downloads gigabytes unasked
  assert.equal(await waitForState(page, ["idle", "ready", "error"], 30_000), "idle");
  assert.match(await page.textContent("#status-text"), /4\.0 GB to download/);
  // What it takes, from its manifest, before the download: image size, download, the largest GPU buffer.
  assert.match(await page.textContent("#model-info"), /^128×128 images · 4\.0 GB to download · GPU buffers up to 12 MB \(this GPU allows [\d.]+ [MG]B\)$/);
  assert.equal(await page.textContent("#generate"), "Download and generate");
  assert.equal(await page.isEnabled("#generate"), true);
  assert.deepEqual(modelDownloads(requests), [], "nothing but the manifest before the click");
  await screenshot(page, "11-idle-large-model");
  await page.evaluate(() => window.websd.load());
  assert.equal(await page.evaluate(() => document.body.dataset.state), "ready");
  assert.ok(modelRequests(requests).includes("stable_diffusion_webgpu.wasm"));
  await context.close();
});

test("the site works from a sub-path, as on GitHub Pages (https://<user>.github.io/<repo>/)", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  const { context, page, requests } = session;
  // /repo/<path> is answered by /<path>: every URL the page makes must be relative to where it is served.
  await context.route(`${server.url}repo/**`, (route) => route.continue({ url: route.request().url().replace("/repo/", "/") }));
  await page.goto(`${server.url}repo/?model=sd15-tiny`);
  assert.equal(await waitForState(page, ["ready", "error"]), "ready", JSON.stringify(await pageText(page)));
  assert.deepEqual(requests.filter((p) => !p.startsWith("repo/")), [], "every request stays under /repo/");
  await context.close();
});

// Put in front of the worker script: every device the worker asks for gets a `lost` promise that
// self.__loseDevice(message) settles as a real loss does ({reason: "unknown"}), destroying the device with it.
// (destroy() alone reports reason "destroyed", which the runtime rightly takes for its own dispose.)
const LOSABLE_DEVICES = `if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    let lose;
    const lost = new Promise((resolve) => { lose = resolve; device.lost.then(resolve); });
    Object.defineProperty(device, "lost", { value: lost });
    self.__loseDevice = (message) => { lose({ reason: "unknown", message }); device.destroy(); };
    return device;
  };
}`;

test("a GPU device lost while generating is said so, and Retry sets the model up again", { timeout: 300_000 }, async () => {
  const session = await openPage(browser, server);
  await withoutWebGPU(session, LOSABLE_DEVICES);
  const { page, requests } = session;
  await page.goto(`${server.url}?model=sd15-tiny&steps=1`);
  assert.equal(await waitForState(page, ["ready", "error"]), "ready");
  const fetched = modelDownloads(requests).length;
  await page.click("#generate");
  await waitForState(page, "generating", 60_000);
  const [worker] = page.workers();
  await worker.evaluate(() => self.__loseDevice("the test pulled it"));
  assert.equal(await waitForState(page, ["error", "done"], 120_000), "error");
  const text = await pageText(page);
  assert.equal(text.errorTitle, "The GPU stopped responding");
  assert.match(text.errorMessage, /The GPU device was lost \(the test pulled it\)/);
  assert.doesNotMatch(text.errorMessage + text.errorHelp, STACK);
  assert.equal(await page.textContent("#retry"), "Retry");
  await screenshot(page, "12-device-lost");
  // Retry: a new device, the model set up again from the files already here, and the image made.
  await page.click("#retry");
  assert.equal(await waitForState(page, ["done", "error"]), "done", JSON.stringify(await pageText(page)));
  assert.equal(modelDownloads(requests).length, fetched, "the model's files were not downloaded again");
  await session.context.close();
});

test("developer tools only with ?dev=1", { timeout: 60_000 }, async () => {
  const session = await openPage(browser, server);
  const { page, requests } = session;
  await page.goto(`${server.url}?model=sd15-tiny`);
  await waitForState(page, ["ready", "error"]);
  assert.equal(await page.isHidden("#dev"), true);
  assert.ok(!requests.some((p) => p.endsWith("dev.js")));
  await page.goto(`${server.url}?model=sd15-tiny&dev=1`);
  await waitForState(page, ["ready", "error"]);
  assert.equal(await page.isVisible("#dev"), true);
  assert.match(await page.textContent("#dev"), /Developer tools[\s\S]*swiftshader/i);
  await session.context.close();
});

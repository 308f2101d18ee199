// Downloads and the browser cache, in headless Chromium with the tiny SD 1.5 (no generation: loading only):
//   1. a shard answers 404 once: the page names the file and offers Retry; Retry loads the model without
//      fetching again what had already arrived
//   2. a second visit downloads nothing; a corrupt cached shard and a truncated cached library are detected
//      (sha256), fetched again and replaced, never used
//   3. "Clear cache" empties the caches
//   4. a network error and damaged bytes on a shard: named, and Retry fetches that file (and no other again)
//
//   make test-browser     (or: node --test tests/browser/downloads.test.mjs, after assembling build/test-site)

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";

import { SITE, MODEL_DIR, launchBrowser, modelRequests, openPage, pageText, screenshot, startServer, waitForState } from "./harness.mjs";

const FAILING = "unet/params.v1/params_shard_0.bin";
const CORRUPT = "vae/params.v1/params_shard_0.bin";
const TRUNCATED = "stable_diffusion_webgpu.wasm";

let server, browser, session, manifest;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  manifest = JSON.parse(await readFile(path.join(SITE, MODEL_DIR, "model.json"), "utf8"));
});

after(async () => {
  await browser?.close();
  server?.close();
});

const count = (list, item) => list.filter((x) => x === item).length;

test("a failed shard download names the file; Retry resumes without fetching again what arrived", { timeout: 180_000 }, async () => {
  session = await openPage(browser, server);
  const { context, page, requests, errors } = session;
  let failed = 0;
  await context.route(`**/${MODEL_DIR}${FAILING}`, (route) => (failed++ === 0 ? route.fulfill({ status: 404, body: "not found" }) : route.continue()));
  await page.goto(`${server.url}?model=sd15-tiny`);

  assert.equal(await waitForState(page, ["error", "ready"]), "error");
  const text = await pageText(page);
  assert.equal(text.errorTitle, "A download failed");
  assert.match(text.errorMessage, new RegExp(`${FAILING.replace(/\./g, "\\.")}.*404`));
  assert.match(text.errorHelp, /Retry/);
  assert.doesNotMatch(text.errorMessage + text.errorHelp, /\.js:\d+|at \w+ \(/, "no stack trace");
  assert.equal(await page.evaluate((name) => [...document.querySelectorAll("#file-list li")]
    .find((li) => li.querySelector(".name").textContent === name)?.dataset.state, FAILING), "failed");
  await page.evaluate(() => (document.getElementById("files").open = true));
  await screenshot(page, "6-download-failed");

  const firstTry = modelRequests(requests);
  // Retry is focused: Enter presses it (keyboard use).
  assert.equal(await page.evaluate(() => document.activeElement?.id), "retry");
  await page.keyboard.press("Enter");
  assert.equal(await waitForState(page, ["ready", "error"]), "ready", JSON.stringify(await pageText(page)));
  await screenshot(page, "7-ready");

  const retried = modelRequests(requests).slice(firstTry.length);
  // The manifest is always read afresh; of the files, only the one that failed and those never started.
  const arrived = firstTry.filter((p) => p !== "model.json" && p !== FAILING);
  assert.ok(arrived.length >= 5, `files downloaded before the failure: ${arrived}`);
  for (const p of arrived) assert.equal(count(retried, p), 0, `${p} was downloaded again after Retry`);
  assert.equal(count(retried, FAILING), 1);
  assert.equal(count(retried, "model.json"), 1);
  const all = modelRequests(requests);
  for (const p of new Set(all)) {
    if (p !== "model.json" && p !== FAILING) assert.equal(count(all, p), 1, `${p} fetched ${count(all, p)} times`);
  }
  assert.equal(failed, 2);
  assert.deepEqual(errors.filter((e) => !/404/.test(e)), []);
});

for (const [what, fail, title, message] of [
  ["a network error", (route) => route.abort("connectionreset"), "A download failed", /Could not download clip\/params\.v1\/params_shard_0\.bin: the network request failed/],
  ["damaged bytes", async (route) => {
    const response = await route.fetch();
    const body = await response.body();
    body[100] ^= 0xff;
    route.fulfill({ response, body });
  }, "A file arrived damaged", /clip\/params\.v1\/params_shard_0\.bin arrived damaged or out of date/],
]) {
  test(`${what} on a shard: the file is named, Retry fetches it alone`, { timeout: 120_000 }, async () => {
    const { context, page, requests } = await openPage(browser, server);
    let calls = 0;
    await context.route(`**/${MODEL_DIR}clip/params.v1/params_shard_0.bin`, (route) => (calls++ === 0 ? fail(route) : route.continue()));
    await page.goto(`${server.url}?model=sd15-tiny`);
    assert.equal(await waitForState(page, ["error", "ready"]), "error");
    const text = await pageText(page);
    assert.equal(text.errorTitle, title);
    assert.match(text.errorMessage, message);
    const before = modelRequests(requests).length;
    await page.click("#retry");
    assert.equal(await waitForState(page, ["ready", "error"]), "ready", JSON.stringify(await pageText(page)));
    const again = modelRequests(requests).slice(before).filter((p) => p !== "model.json");
    assert.ok(again.includes("clip/params.v1/params_shard_0.bin"));
    for (const p of again) assert.ok(!modelRequests(requests).slice(0, before).includes(p) || p === "clip/params.v1/params_shard_0.bin",
      `${p} was fetched again`);
    await context.close();
  });
}

test("a second visit downloads nothing but the manifest; corrupt or truncated cached files are fetched again", { timeout: 180_000 }, async () => {
  assert.ok(session, "needs the cache filled by the first test");
  const { page, requests } = session;
  // Damage two cached copies, keeping their headers (so they look complete until their bytes are hashed).
  const damaged = await page.evaluate(async ({ corrupt, truncated, dir }) => {
    const out = {};
    for (const name of await caches.keys()) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) {
        const rel = new URL(request.url).pathname.split(dir)[1];
        if (rel !== corrupt && rel !== truncated) continue;
        const response = await cache.match(request);
        let bytes = new Uint8Array(await response.arrayBuffer());
        if (rel === corrupt) bytes[bytes.length >> 1] ^= 0xff;
        else bytes = bytes.slice(0, bytes.length >> 1);
        await cache.put(request, new Response(bytes, { headers: response.headers }));
        out[rel] = bytes.length;
      }
    }
    return out;
  }, { corrupt: CORRUPT, truncated: TRUNCATED, dir: MODEL_DIR });
  assert.deepEqual(Object.keys(damaged).sort(), [CORRUPT, TRUNCATED].sort());

  const before = requests.length;
  await page.reload();
  assert.equal(await waitForState(page, ["ready", "error"]), "ready", JSON.stringify(await pageText(page)));
  const second = modelRequests(requests.slice(before));
  // The manifest twice: read to describe the model (sizes, schedulers, GPU needs), then by the load, afresh.
  assert.deepEqual([...second].sort(), ["model.json", "model.json", CORRUPT, TRUNCATED].sort(), "only the manifest and the damaged files");

  // The cache now holds intact copies again.
  const records = { [CORRUPT]: null, [TRUNCATED]: manifest.wasm };
  const vaeIndex = JSON.parse(await readFile(path.join(SITE, MODEL_DIR, manifest.submodules.vae.params.path), "utf8"));
  records[CORRUPT] = { sha256: vaeIndex.records[0].sha256, bytes: vaeIndex.records[0].nbytes };
  const repaired = await page.evaluate(async ({ dir, names }) => {
    const out = {};
    for (const name of await caches.keys()) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) {
        const rel = new URL(request.url).pathname.split(dir)[1];
        if (!names.includes(rel)) continue;
        const bytes = await (await cache.match(request)).arrayBuffer();
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
        out[rel] = { bytes: bytes.byteLength, sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") };
      }
    }
    return out;
  }, { dir: MODEL_DIR, names: [CORRUPT, TRUNCATED] });
  for (const [rel, want] of Object.entries(records)) {
    assert.deepEqual(repaired[rel], { bytes: want.bytes, sha256: want.sha256 }, `${rel} in the cache`);
  }
  const status = await page.textContent("#status-detail");
  assert.match(status, /Loaded in/);
});

test("Clear cache removes the stored model files", { timeout: 60_000 }, async () => {
  assert.ok(session, "needs the cache filled by the first test");
  const { page } = session;
  assert.match(await page.textContent("#cache-status"), /Model files kept in this browser: .*MB/);
  await page.click("#clear-cache");
  assert.match(await page.textContent("#clear-cache"), /again/, "the first click asks for a second");
  await page.click("#clear-cache");
  await page.waitForFunction(() => /No model files/.test(document.getElementById("cache-status").textContent));
  assert.deepEqual(await page.evaluate(async () => (await caches.keys()).filter((n) => n.startsWith("websd-"))), []);
  assert.equal(await page.evaluate(() => document.body.dataset.state), "ready", "the loaded model stays usable");
});

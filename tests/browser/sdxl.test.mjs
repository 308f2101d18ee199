// The page with the tiny SDXL, in headless Chromium (WebGPU on SwiftShader):
//   1. a link names the model: the form offers its schedulers (euler first, its default) and the frame takes its
//      image size; one short generation with an empty negative prompt (which SDXL makes zero embeddings) matches
//      PyTorch (stages/reference.py --model sdxl); the prompt-length hint counts with its tokenizers
//   2. a link's scheduler that SDXL lacks (pndm) becomes a notice, before anything is downloaded; choosing another
//      model offers its schedulers
//
//   make test-browser     (or: node --test tests/browser/sdxl.test.mjs, after assembling build/test-site with
//                          --models "sd15-tiny sdxl-tiny")

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  announceLargeModels, comparePNG, launchBrowser, modelDownloads, openPage, pageText, reference, resultPNG, save, screenshot,
  startServer, waitForState,
} from "./harness.mjs";

const MODEL = "sdxl-tiny";
// Two steps keep it short: the first step compiles the kernels, which is most of the time on SwiftShader.
const SETTINGS = { prompt: "a lighthouse at dusk", negative: "", seed: 5, steps: 2, guidance: 7.5 };
const MIN_PSNR = 30; // as for SD 1.5 (generate.test.mjs); the CPU twin gets 64 dB

let server, browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.close();
});

test("SDXL from a link: its schedulers and image size; the image matches the PyTorch reference", { timeout: 300_000 }, async () => {
  const refPromise = reference({ ...SETTINGS, scheduler: "euler" }, "sdxl-reference", MODEL);
  const { page, errors, foreign } = await openPage(browser, server);
  // No scheduler in the link: the model's default.
  await page.goto(`${server.url}?${new URLSearchParams({ ...SETTINGS, model: MODEL, preview: "0", autorun: "1" })}`);
  await waitForState(page, ["generating", "error"]);
  const form = await page.evaluate(() => ({
    schedulers: [...document.getElementById("scheduler").options].map((o) => o.value),
    info: document.getElementById("model-info").textContent,
    aspect: getComputedStyle(document.getElementById("frame")).aspectRatio,
    settings: window.websd.settings,
  }));
  assert.deepEqual(form.schedulers, ["euler", "dpm"]);
  assert.equal(form.settings.scheduler, "euler");
  assert.equal(form.settings.model, MODEL);
  assert.match(form.info, /^128×128 images · [\d.]+ MB to download · GPU buffers up to [\d.]+ MB \(this GPU allows [\d.]+ [MG]B\)$/);
  assert.equal(form.aspect, "128 / 128");

  assert.equal(await waitForState(page, ["done", "error"]), "done", JSON.stringify(await pageText(page)));
  await screenshot(page, "30-sdxl-done");
  const png = await save("sdxl-browser.png", await resultPNG(page));
  const cmp = await comparePNG(png, await refPromise);
  console.log(`sdxl: PSNR ${cmp.psnr.toFixed(2)} dB against the PyTorch reference`);
  assert.deepEqual(cmp.size_a, [128, 128]);
  assert.ok(cmp.psnr >= MIN_PSNR, `PSNR ${cmp.psnr} dB < ${MIN_PSNR} dB`);
  assert.equal(cmp.text_a.scheduler, "euler");
  assert.equal(cmp.text_a.model, MODEL);
  assert.equal(new URL(page.url()).searchParams.get("scheduler"), "euler");

  // The prompt-length hint, with SDXL's tokenizers (both read 77 tokens).
  await page.fill("#prompt", Array.from({ length: 90 }, (_, i) => `word${i}`).join(" "));
  await page.waitForFunction(() => !document.getElementById("prompt-fit").hidden);
  assert.match(await page.textContent("#prompt-fit"), /^\d+ tokens: the text encoder reads the first 75, so “word\d+ .+” is left out\.$/);
  assert.deepEqual(foreign, []);
  assert.deepEqual(errors, []);
});

test("a link's scheduler that SDXL does not offer becomes a notice, and nothing is downloaded", { timeout: 60_000 }, async () => {
  const { context, page, requests, errors } = await openPage(browser, server);
  await announceLargeModels(context);
  await page.goto(`${server.url}?model=${MODEL}&scheduler=pndm&steps=4&autorun=1`);
  assert.equal(await waitForState(page, ["idle", "ready", "error"], 30_000), "idle");
  const notices = await page.$$eval("#notices li", (items) => items.map((li) => li.textContent));
  assert.deepEqual(notices, [`scheduler="pndm" in the link: ${MODEL}'s schedulers are euler, dpm; using euler.`]);
  assert.equal(await page.inputValue("#scheduler"), "euler");
  assert.equal(new URL(page.url()).searchParams.get("scheduler"), "euler");
  // Choosing another model offers its schedulers, keeping the chosen one where it has it.
  const schedulers = () => page.$$eval("#scheduler option", (options) => options.map((o) => o.value));
  await page.selectOption("#scheduler", "dpm");
  await page.selectOption("#model", "sd15-tiny");
  await page.waitForFunction(() => document.getElementById("scheduler").options.length === 3);
  assert.deepEqual(await schedulers(), ["dpm", "euler", "pndm"]);
  assert.equal(await page.inputValue("#scheduler"), "dpm");
  await page.selectOption("#scheduler", "pndm");
  await page.selectOption("#model", MODEL);
  await page.waitForFunction(() => document.getElementById("scheduler").options.length === 2);
  assert.equal(await page.inputValue("#scheduler"), "euler", "the model's default stands in for one it lacks");
  assert.deepEqual(modelDownloads(requests, MODEL), []);
  assert.deepEqual(modelDownloads(requests, "sd15-tiny"), []);
  assert.deepEqual(errors, []);
  await context.close();
});

// Settings from a link, whatever they hold, in headless Chromium:
//   1. a seeded generator of URL settings (numbers, strings, empty and absurd values, for every parameter):
//      each page ends usable (idle with Generate enabled, the unusable values replaced and named in a notice)
//      or with an error card, within seconds; no dialog opens, no request leaves the site, no page error.
//      The model is announced as a large download, so no case downloads anything.
//      A scheduler is usable when the link's model (or the site's default model) offers it: the models and their
//      schedulers are read from the assembled site's config and manifests.
//   2. the case that used to stick for good: autorun=1 with a negative step count
//
//   make test-browser     (or: node --test tests/browser/settings.test.mjs, after assembling build/test-site)

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import {
  SITE, announceLargeModels, launchBrowser, modelDownloads, openPage, pageText, screenshot, startServer, waitForState,
} from "./harness.mjs";

const CASES = 200;
const SEED = 20261130;
const PREVIEWS = ["auto", "0", "1", "2", "5", "10"];
const siteFile = (name) => JSON.parse(readFileSync(path.join(SITE, name), "utf8"));
const CONFIG = siteFile("stable-diffusion-config.json");
const MODELS = CONFIG.models.map((m) => m.id);
// {model id: its schedulers}, as its manifest lists them
const SCHEDULERS = Object.fromEntries(CONFIG.models.map((m) => [m.id, Object.keys(siteFile(m.model_url).schedulers)]));
const ALL_SCHEDULERS = [...new Set(Object.values(SCHEDULERS).flat())];

let server, browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.close();
});

// mulberry32: a small seeded generator, so a failing case can be run again by its number.
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUMBERS = ["-3", "0", "1", "7", "20", "50", "51", "30", "31", "0.5", "2.5", "-0", "1e309", "NaN", "Infinity",
  "-Infinity", "0x10", " 7 ", "", "abc", "1,5", "9007199254740991", "9007199254740993", "1e3", "４２", "null"];
const STRINGS = ["", " ", "a cat", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "😀".repeat(40),
  "x".repeat(3000), "\u0000\u202e", "null", "undefined", "javascript:alert(1)", "%00", "a\nb"];
const POOLS = {
  prompt: STRINGS,
  negative: STRINGS,
  seed: NUMBERS,
  steps: NUMBERS,
  guidance: NUMBERS,
  scheduler: [...ALL_SCHEDULERS, "", "DPM", "ddim", "lms", "<b>", "euler "],
  preview: [...PREVIEWS, "", "3", "-1", "every"],
  model: [...MODELS, "", "nope", "../../etc/passwd", "SD15-TINY", "https://example.com/model.json"],
  autorun: ["1", "0", "", "true"],
  dev: ["0", "", "2"],
};

function makeCase(random) {
  const query = {};
  for (const [key, pool] of Object.entries(POOLS)) if (random() < 0.5) query[key] = pool[Math.floor(random() * pool.length)];
  return query;
}

// What the page must accept, said independently of its code: every other value present gets a notice.
const number = (v) => (v.trim() === "" ? NaN : Number(v));
const USABLE = {
  seed: (v) => Number.isSafeInteger(number(v)) && number(v) >= 0,
  steps: (v) => Number.isInteger(number(v)) && number(v) >= 1 && number(v) <= 50,
  guidance: (v) => Number.isFinite(number(v)) && number(v) >= 1 && number(v) <= 30,
  // among those of the model the page shows: the link's, or the site's default
  scheduler: (v, query) => SCHEDULERS[MODELS.includes(query.model) ? query.model : CONFIG.default_model].includes(v),
  preview: (v) => PREVIEWS.includes(v),
  model: (v) => MODELS.includes(v),
};

// The cases run on LANES pages side by side (each its own browser context): a case is mostly the page's module
// waterfall and the worker's start, so one page alone leaves the cores idle between requests.
const LANES = 4;

test(`${CASES} generated sets of URL settings: each page ends usable or with an error card, never stuck`, { timeout: 600_000 }, async () => {
  const random = generator(SEED);
  const cases = Array.from({ length: CASES }, () => makeCase(random));
  const states = {};
  const lane = async (first) => {
    const session = await openPage(browser, server);
    const { context, page, foreign, errors } = session;
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      d.dismiss().catch(() => {});
    });
    // The tiny model announced as 4 GB: the page waits for a click, so no case downloads anything.
    await announceLargeModels(context);
    for (let i = first; i < CASES; i += LANES) await checkCase(page, i, cases[i], states);
    assert.deepEqual(dialogs, [], `a dialog opened (lane ${first})`);
    assert.deepEqual(foreign, [], `a request left the site (lane ${first})`);
    assert.deepEqual(errors, [], `page errors (lane ${first})`);
    for (const model of MODELS) assert.deepEqual(modelDownloads(session.requests, model), [], `a file of ${model} was downloaded`);
    await context.close();
  };
  await Promise.all(Array.from({ length: LANES }, (_, first) => lane(first)));
  assert.equal(Object.values(states).reduce((a, b) => a + b, 0), CASES);
  console.log(`settings cases: ${JSON.stringify(states)}`);
});

async function checkCase(page, i, query, states) {
  const what = `case ${i}: ?${new URLSearchParams(query)}`;
  await page.goto(`${server.url}?${new URLSearchParams(query)}`);
  const state = await waitForState(page, ["idle", "ready", "error"], 10_000).catch(() => null);
  const text = await pageText(page);
  assert.ok(state, `${what}: still "${text.state}" after 10 s (${text.status})`);
  states[state] = (states[state] ?? 0) + 1;
  if (state === "error") {
    assert.ok(text.errorTitle && text.errorMessage, `${what}: an error state without a card`);
    return;
  }
  assert.equal(await page.isEnabled("#generate"), true, `${what}: Generate is disabled in state ${state}`);
  const notices = await page.$$eval("#notices li", (items) => items.map((li) => li.textContent));
  const unusable = Object.keys(USABLE).filter((key) => key in query && !USABLE[key](query[key], query)).sort();
  const noticed = notices.map((n) => n.split("=")[0]).sort();
  assert.deepEqual(noticed, unusable, `${what}: notices ${JSON.stringify(notices)}`);
  // Usable values reach the form as given; the address bar no longer holds the unusable ones.
  const form = await page.evaluate(() => window.websd.settings);
  for (const key of ["steps", "guidance", "seed"]) if (key in query && USABLE[key](query[key])) assert.ok(form[key] === number(query[key]), `${what}: ${key} is ${form[key]}`);
  for (const key of ["scheduler", "preview", "model"]) if (key in query && USABLE[key](query[key], query)) assert.equal(form[key], query[key], `${what}: ${key}`);
  if (unusable.length) {
    const address = new URL(page.url()).searchParams;
    for (const key of unusable) if (key !== "model") assert.notEqual(address.get(key), query[key], `${what}: the address bar keeps ${key}`);
  }
}

test("autorun with a negative step count: the page loads, says what it changed, and a reload does not repeat it", { timeout: 120_000 }, async () => {
  const session = await openPage(browser, server);
  const { page, errors } = session;
  await page.goto(`${server.url}?model=sd15-tiny&steps=-3&autorun=1&prompt=a%20cat`);
  assert.equal(await waitForState(page, ["idle", "ready", "error", "generating"], 60_000), "ready");
  assert.equal(await page.isEnabled("#generate"), true);
  assert.equal(await page.isEnabled("#model"), true);
  const notices = await page.$$eval("#notices li", (items) => items.map((li) => li.textContent));
  assert.equal(notices.length, 1);
  assert.match(notices[0], /^steps="-3" in the link: steps must be a whole number from 1 to 50; using 20\.$/);
  assert.equal(await page.inputValue("#steps"), "20");
  assert.equal(new URL(page.url()).searchParams.get("steps"), "20");
  assert.equal(new URL(page.url()).searchParams.get("autorun"), null, "a reload would run the corrected settings unasked");
  await screenshot(page, "20-corrected-settings");
  await page.reload();
  assert.equal(await waitForState(page, ["idle", "ready", "error"], 60_000), "ready");
  assert.equal(await page.$eval("#notices", (n) => n.hidden), true);
  assert.deepEqual(errors, []);
  await session.context.close();
});

test("a step count the model refuses, given to Generate: the page says which field and stays usable", { timeout: 120_000 }, async () => {
  const session = await openPage(browser, server);
  const { page, errors } = session;
  await page.goto(`${server.url}?model=sd15-tiny`);
  assert.equal(await waitForState(page, ["idle", "ready", "error"], 60_000), "ready");
  await page.fill("#steps", "0");
  await page.press("#prompt", "Control+Enter");
  await page.waitForFunction(() => /Fix the marked setting/.test(document.getElementById("status-text").textContent));
  assert.equal(await page.evaluate(() => document.body.dataset.state), "ready");
  assert.match((await pageText(page)).detail, /Steps must be a whole number from 1 to 50/);
  assert.equal(await page.isEnabled("#generate"), true);
  assert.deepEqual(errors, []);
  await session.context.close();
});

test("a prompt longer than the text encoder reads is flagged under its box, with where it is cut", { timeout: 120_000 }, async () => {
  const session = await openPage(browser, server);
  const { page, errors } = session;
  await page.goto(`${server.url}?model=sd15-tiny`);
  assert.equal(await waitForState(page, ["idle", "ready", "error"], 60_000), "ready");
  const words = Array.from({ length: 90 }, (_, i) => `word${i}`); // each "wordN" is more than one CLIP token
  await page.fill("#prompt", words.slice(0, 10).join(" "));
  await page.waitForTimeout(500);
  assert.equal(await page.$eval("#prompt-fit", (p) => p.hidden), true, "a short prompt is flagged");
  await page.fill("#prompt", words.join(" "));
  await page.waitForFunction(() => !document.getElementById("prompt-fit").hidden);
  const text = await page.textContent("#prompt-fit");
  assert.match(text, /^\d+ tokens: the text encoder reads the first 75, so “.+” is left out\.$/);
  // What is left out is the prompt from about word 35 on (each "wordN" is two or three CLIP tokens).
  const prompt = words.join(" ");
  const shown = text.match(/“(.+)”/)[1].replace(/…$/, "");
  const at = prompt.indexOf(shown);
  assert.ok(at > prompt.indexOf("word20 ") && at < prompt.indexOf("word50 ") && prompt[at - 1] === " ",
    `"${shown}" is not where the prompt is cut`);
  assert.equal(await page.$eval("#negative-fit", (p) => p.hidden), true);
  await page.fill("#prompt", "a cat");
  await page.waitForFunction(() => document.getElementById("prompt-fit").hidden);
  assert.deepEqual(errors, []);
  await session.context.close();
});

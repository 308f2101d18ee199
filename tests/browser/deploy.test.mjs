// make deploy-ghpages for real: deploy/ghpages.py publishes the tiny SD 1.5 into a local bare git repository,
// with its model files laid out for a parameter host; the gh-pages branch is cloned and served on one port,
// the parameter host on a second (another origin), so the Content-Security-Policy and CORS are exercised.
//   1. headless Chromium generates on the deployed site an image that matches PyTorch; it fetched model files
//      from the parameter host alone, and the CSP refuses any other host
//   2. a parameter host that sends no CORS header: the page names that problem
//   3. a second deploy with nothing changed adds no commit
//   4. a shard over the file limit, with no parameter host, is refused naming the file, as is a site over the
//      size limit; nothing is pushed
//
//   make test-browser     (or: node --test tests/browser/deploy.test.mjs, after make test-build)

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import {
  ARTIFACTS, ROOT, comparePNG, launchBrowser, openPage, pageText, reference, resultPNG, save, startServer, waitForState,
} from "./harness.mjs";

const run = promisify(execFile);
const SETTINGS = { prompt: "a lighthouse at dusk", negative: "", seed: 5, steps: 2, scheduler: "dpm", guidance: 7.5 };
const MIN_PSNR = 30;

let dir, bare, clone, site, params, browser;

const serve = (dir, options = {}) => startServer({ dir, ...options });

/** deploy/ghpages.py with `args` -> {code, stdout, stderr}. */
async function deploy(args, env = {}) {
  try {
    const { stdout, stderr } = await run("python3", [path.join(ROOT, "deploy/ghpages.py"), "--remote", bare,
      "--artifacts", ARTIFACTS, "--models", "sd15-tiny", "--site", path.join(dir, "staging"), ...args],
    { cwd: ROOT, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const commits = async () => Number((await run("git", ["--git-dir", bare, "rev-list", "--count", "gh-pages"])).stdout.trim());

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "deploy-test-"));
  bare = path.join(dir, "remote.git");
  await run("git", ["init", "--quiet", "--bare", bare]);
  const paramsDir = path.join(dir, "params");
  await run("mkdir", ["-p", paramsDir]);
  params = await serve(paramsDir, { files: true, cors: true });
  const first = await deploy(["--params-base-url", `${params.url}`, "--params-out", paramsDir]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /upload .*params/);
  clone = path.join(dir, "clone");
  await run("git", ["clone", "--quiet", "--branch", "gh-pages", bare, clone]);
  site = await serve(clone);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await site?.close();
  await params?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("the deployed site generates an image that matches PyTorch; model files come from the parameter host alone", { timeout: 300_000 }, async () => {
  const refPromise = reference(SETTINGS, "deploy-reference");
  // The published branch: the page, its runtime, the config and each model's model.json; no weights.
  const { stdout: files } = await run("git", ["-C", clone, "ls-files"]);
  assert.ok(files.includes(".nojekyll") && files.includes("stable-diffusion-config.json"), files);
  assert.ok(!/\.bin$|\.wasm$/m.test(files), "no library or shard on the branch");
  const csp = /connect-src ([^;"]*)/.exec(await readFile(path.join(clone, "index.html"), "utf8"))[1];
  assert.equal(csp, `'self' ${new URL(params.url).origin} blob:`);

  const { page, foreign, errors } = await openPage(browser, site);
  const query = new URLSearchParams({ ...SETTINGS, model: "sd15-tiny", preview: "0", autorun: "1" });
  await page.goto(`${site.url}?${query}`);
  await waitForState(page, ["done", "error"]);
  const done = await pageText(page);
  assert.equal(done.state, "done", JSON.stringify(done));
  const cmp = await comparePNG(await save("deploy-browser.png", await resultPNG(page)), await refPromise);
  console.log(`deployed site: PSNR ${cmp.psnr.toFixed(2)} dB against the PyTorch reference`);
  assert.ok(cmp.psnr >= MIN_PSNR, `PSNR ${cmp.psnr} dB < ${MIN_PSNR} dB`);
  assert.ok(foreign.length > 0 && foreign.every((u) => u.startsWith(params.url)), foreign.join("\n"));
  assert.ok(foreign.some((u) => u.endsWith(".wasm")) && foreign.some((u) => u.endsWith(".bin")));
  assert.deepEqual(errors, []);

  // The policy refuses a host the config does not name.
  const blocked = await page.evaluate(async () => {
    const violation = new Promise((resolve) => document.addEventListener("securitypolicyviolation",
      (e) => resolve(e.violatedDirective), { once: true }));
    const fetched = await fetch("http://127.0.0.1:9/elsewhere.json").then(() => "fetched", (e) => e.name);
    return { fetched, violation: await violation };
  });
  assert.deepEqual(blocked, { fetched: "TypeError", violation: "connect-src" });
});

test("a parameter host without the CORS header: the page names that problem", { timeout: 120_000 }, async () => {
  // The same host and port, now without Access-Control-Allow-Origin.
  await params.close();
  params = await serve(path.join(dir, "params"), { port: params.port, files: true, cors: false });
  const { page } = await openPage(browser, site);
  await page.goto(`${site.url}?${new URLSearchParams({ model: "sd15-tiny", autorun: "1" })}`);
  await waitForState(page, ["error", "done"], 60_000);
  const text = await pageText(page);
  assert.equal(text.state, "error", JSON.stringify(text));
  assert.match(text.errorMessage, /without the CORS header \(Access-Control-Allow-Origin\)/);
  assert.ok(text.errorMessage.includes(new URL(params.url).origin), text.errorMessage);
});

test("a second deploy with nothing changed adds no commit", { timeout: 60_000 }, async () => {
  const before = await commits();
  const again = await deploy(["--params-base-url", params.url, "--params-out", path.join(dir, "params")]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /already holds this site; nothing pushed/);
  assert.equal(await commits(), before);
});

test("a shard over the file limit, with no parameter host, is refused naming the file", { timeout: 60_000 }, async () => {
  const before = await commits();
  // The tiny model's text encoder shard is 6.3 MB: over a 5 MB limit, as a full-size shard is over GitHub's 100 MB.
  const refused = await deploy([], { GHPAGES_MAX_FILE_BYTES: String(5e6) });
  assert.notEqual(refused.code, 0);
  const lines = refused.stderr.trim().split("\n");
  assert.equal(lines.length, 1, refused.stderr);
  assert.match(lines[0], /^error: deploy-ghpages: models\/sd15-tiny\/clip\/params\.v1\/params_shard_0\.bin is 6 MB, over GitHub Pages' 5 MB per file; host the model files elsewhere: PARAMS_BASE_URL=/);
  assert.equal(await commits(), before);
});

test("a site over the size limit, with no parameter host, is refused", { timeout: 60_000 }, async () => {
  const before = await commits();
  // The tiny model's site is 34 MB: over a 20 MB limit, as full-size models are over GitHub Pages' 1 GB.
  const refused = await deploy([], { GHPAGES_MAX_SITE_BYTES: String(20e6) });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr.trim(), /^error: deploy-ghpages: the site is 3\d MB, over GitHub Pages' 20 MB; host the model files elsewhere: PARAMS_BASE_URL=/);
  assert.equal(await commits(), before);
});

// Proof that web/runtime/tvm.js and the fixture .wasm work in a browser: headless Chromium on SwiftShader
// runs the fixture's functions (tests/node/runtime.test.mjs does the same in Node) and the results are
// compared with TVM on the CPU. A sketch for the browser tests to come, not one of them.
//
//   .venv/bin/python tests/node/fixtures/make_runtime_fixture.py      # once
//   node tests/node/browser_runtime_proof.mjs                          # exit status 0 when all match
//
// The repository is served over http://127.0.0.1 (a secure context, so WebGPU is on); an import map
// points the bare "@mlc-ai/web-runtime" at the npm bundle, as a page would.

import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FIXTURE = "build/test-fixtures/runtime";
const TOLERANCE = 1e-3;
const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader",
  "--use-webgpu-adapter=swiftshader", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run",
];

const PAGE = `<!doctype html>
<script type="importmap">
{ "imports": { "@mlc-ai/web-runtime": "/node_modules/@mlc-ai/web-runtime/lib/index.js" } }
</script>
<script type="module">
import { deviceLimits, instantiateLibrary, openVM, readTensor, toGPU } from "/web/runtime/tvm.js";

const TYPED = { float32: Float32Array, int32: Int32Array };
async function load(entry) {
  const bytes = await (await fetch("/${FIXTURE}/" + entry.file)).arrayBuffer();
  return new TYPED[entry.dtype](bytes);
}

window.runFixture = async () => {
  const manifest = await (await fetch("/${FIXTURE}/manifest.json")).json();
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter.requestDevice({ requiredLimits: deviceLimits(adapter) });
  const wasm = await (await fetch("/${FIXTURE}/" + manifest.wasm)).arrayBuffer();
  const lib = await instantiateLibrary(new Uint8Array(wasm), device, { logger: console.log });
  const results = {};
  for (const mod of manifest.modules) {
    const arrays = [];
    for (const entry of [...mod.inputs, ...mod.params]) arrays.push([entry, await load(entry)]);
    const expected = await load(mod.expected);
    const vm = openVM(lib, mod.prefix);
    const start = performance.now();
    lib.tvm.beginScope();
    try {
      const out = vm.fn(mod.function)(...arrays.map(([entry, array]) => toGPU(lib, array, entry.shape)));
      const actual = await readTensor(lib, out);
      let diff = 0, norm = 0;
      for (let i = 0; i < expected.length; ++i) {
        diff += (actual[i] - expected[i]) ** 2;
        norm += expected[i] ** 2;
      }
      results[mod.function] = { relErr: Math.sqrt(diff / norm), shape: out.shape, ms: performance.now() - start };
    } finally {
      lib.tvm.endScope();
      vm.dispose();
    }
  }
  results.adapter = adapter.info ? adapter.info.description || adapter.info.vendor : "?";
  results.gpuErrors = lib.gpuErrors;
  lib.tvm.dispose();
  return results;
};
</script>`;

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".wasm": "application/wasm" };

function serve() {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
      return;
    }
    if (url.pathname === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    const file = path.join(ROOT, decodeURIComponent(url.pathname));
    if (!file.startsWith(ROOT + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

const server = await serve();
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: false, args: CHROMIUM_ARGS });
let failed = false;
try {
  const page = await browser.newPage();
  page.on("console", (msg) => { if (msg.type() === "error") console.error(`[page] ${msg.text()}`); });
  page.on("pageerror", (err) => console.error(`[page error] ${err.message}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => typeof window.runFixture === "function");
  page.setDefaultTimeout(300_000);
  const results = await page.evaluate(() => window.runFixture());
  console.log(JSON.stringify(results, null, 1));
  if (results.gpuErrors.length) {
    console.error(`WebGPU errors: ${results.gpuErrors.join("; ")}`);
    failed = true;
  }
  for (const [name, r] of Object.entries(results)) {
    if (name !== "gpuErrors" && typeof r === "object" && !(r.relErr <= TOLERANCE)) {
      console.error(`${name}: relative error ${r.relErr} > ${TOLERANCE}`);
      failed = true;
    }
  }
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);

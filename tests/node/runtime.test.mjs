// web/runtime/tvm.js on Dawn (the `webgpu` npm package) with SwiftShader: open the fixture .wasm, which
// links two system libraries with different prefixes into one TVM runtime, run each VM function on
// WebGPU and compare with TVM's CPU result.
//
//   .venv/bin/python tests/node/fixtures/make_runtime_fixture.py      # once: build/test-fixtures/runtime/
//   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json node --test tests/node/runtime.test.mjs
//
// RUNTIME_FIXTURE=<folder> points at another fixture folder.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { create, globals } from "webgpu";

import { compileShaders, deviceLimits, instantiateLibrary, openVM, readTensor, toGPU } from "../../web/runtime/tvm.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FIXTURE = process.env.RUNTIME_FIXTURE ?? path.join(ROOT, "build/test-fixtures/runtime");
const TOLERANCE = 1e-3; // relative error (L2) against TVM on the CPU

const TYPED = { float32: Float32Array, int32: Int32Array, uint32: Uint32Array };

async function loadArray(entry) {
  const bytes = await readFile(path.join(FIXTURE, entry.file));
  const Type = TYPED[entry.dtype];
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}

function relativeError(actual, expected) {
  let diff = 0, norm = 0;
  for (let i = 0; i < expected.length; ++i) {
    diff += (actual[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

// Dawn's GPU object must stay referenced while its devices live: once garbage-collected, the next wait
// on the device kills the process (SIGSEGV, or std::system_error "Invalid argument").
let gpu, manifest, device, lib;
const logs = [];

before(async () => {
  try {
    manifest = JSON.parse(await readFile(path.join(FIXTURE, "manifest.json"), "utf8"));
  } catch (err) {
    throw new Error(`no fixture in ${FIXTURE} (${err.code}); run .venv/bin/python tests/node/fixtures/make_runtime_fixture.py`);
  }
  Object.assign(globalThis, globals);
  gpu = create([]);
  const adapter = await gpu.requestAdapter();
  assert.ok(adapter, "no WebGPU adapter; set VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json");
  device = await adapter.requestDevice({ requiredLimits: deviceLimits(adapter) });
  const wasm = await readFile(path.join(FIXTURE, manifest.wasm));
  lib = await instantiateLibrary(wasm, device, { logger: (line) => logs.push(line) });
});

after(() => {
  lib?.tvm.dispose(); // frees the runtime and destroys the device
});

test("the wasm imports nothing that tvm.js and tvmjs do not provide", async () => {
  const wasm = await readFile(path.join(FIXTURE, manifest.wasm));
  const provided = new Set([
    "env.TVMFFIWasmSafeCall", "env.TVMFFIWasmFunctionDeleter", "env.emscripten_notify_memory_growth",
    "env.__cxa_thread_atexit",
    ...["clock_time_get", "environ_get", "environ_sizes_get", "fd_close", "fd_read", "fd_seek", "fd_write",
      "proc_exit"].map((n) => `wasi_snapshot_preview1.${n}`),
  ]);
  const missing = WebAssembly.Module.imports(new WebAssembly.Module(wasm))
    .map((i) => `${i.module}.${i.name}`)
    .filter((name) => !provided.has(name));
  assert.deepEqual(missing, []);
});

test("each prefix opens its own VM; an unknown prefix is a clear error", () => {
  for (const mod of manifest.modules) {
    const opened = openVM(lib, mod.prefix);
    assert.equal(typeof opened.fn(mod.function), "function");
    opened.dispose();
  }
  assert.throws(() => openVM(lib, "not_linked_here_"), /no Relax VM with system-library prefix "not_linked_here_"/);
  const sched = openVM(lib, "fixture_sched_");
  assert.throws(() => sched.fn("lincomb9"), /the "fixture_sched_" VM has no function "lincomb9"/);
  sched.dispose();
  // Failed opens leave tvmjs's scope stack balanced: a scope opened now is the only one.
  lib.tvm.beginScope();
  lib.tvm.endScope();
  assert.throws(() => lib.tvm.endScope(), /stack is empty/);
});

test("compileShaders makes every kernel's pipeline ahead; one over the device's buffer limit is left to its first call", async () => {
  const vms = manifest.modules.map((m) => openVM(lib, m.prefix));
  try {
    // As on a device that binds a single storage buffer per kernel: every kernel (an input and an output at
    // least) is skipped, none fails. (The scheduler's VM alone: SwiftShader compiles slowly.)
    const sched = vms[manifest.modules.findIndex((m) => m.function === "lincomb2")];
    const tight = await compileShaders({ ...lib, device: { limits: { maxStorageBuffersPerShaderStage: 1 } } }, [sched]);
    assert.ok(tight.skipped > 0 && tight.made === 0, JSON.stringify(tight));
    const progress = [];
    const all = await compileShaders(lib, vms, (done, total) => progress.push([done, total]));
    assert.equal(all.skipped, 0);
    assert.ok(all.made >= tight.made + tight.skipped, JSON.stringify({ all, tight }));
    assert.deepEqual(progress, vms.map((_, i) => [i + 1, vms.length]));
    assert.deepEqual(lib.gpuErrors, []);
  } finally {
    for (const vm of vms) vm.dispose();
  }
});

// (after compileShaders above: these dispatch the pipelines it made)
for (const name of ["lincomb2", "unet"]) {
  test(`${name} on WebGPU matches TVM on the CPU`, async (t) => {
    const mod = manifest.modules.find((m) => m.function === name);
    const arrays = [];
    for (const entry of [...mod.inputs, ...mod.params]) arrays.push([entry, await loadArray(entry)]);
    const expected = await loadArray(mod.expected);

    const vm = openVM(lib, mod.prefix);
    lib.tvm.beginScope();
    let actual, shape;
    try {
      const args = arrays.map(([entry, array]) => toGPU(lib, array, entry.shape));
      const out = vm.fn(mod.function)(...args);
      shape = out.shape;
      actual = await readTensor(lib, out);
    } finally {
      lib.tvm.endScope();
      vm.dispose();
    }
    assert.deepEqual(lib.gpuErrors, []);
    assert.deepEqual(shape, mod.expected.shape);
    assert.ok(actual instanceof Float32Array);
    const err = relativeError(actual, expected);
    t.diagnostic(`relative error ${err.toExponential(2)}`);
    assert.ok(err <= TOLERANCE, `relative error ${err} > ${TOLERANCE}`);
  });
}

test("readTensor returns exactly what toGPU uploaded, for every dtype the pipeline uses", async () => {
  const cases = [
    [Float32Array.of(1.5, -2, 3.25, 1e-30), [2, 2]],
    [Int32Array.of(981), []],
    [Uint32Array.of(0xff102030, 0), [2]],
  ];
  for (const [array, shape] of cases) {
    lib.tvm.beginScope();
    try {
      const back = await readTensor(lib, toGPU(lib, array, shape));
      assert.deepEqual(back, array);
    } finally {
      lib.tvm.endScope();
    }
  }
});

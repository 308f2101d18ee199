// Opens the page's .wasm (TVM runtime + every submodule, linked by stages/lib/wasm_link.py) with tvmjs on
// WebGPU, and moves tensors between JavaScript and the GPU. No DOM and no Node modules: the page's worker
// and the Node CLI both call it with bytes and a GPUDevice.
//
//   const lib = await instantiateLibrary(wasmBytes, gpuDevice, { logger });
//   const unet = openVM(lib, "sd15_unet_");            // one system library per submodule prefix
//   lib.tvm.beginScope();
//   const out = unet.fn("unet")(toGPU(lib, latents, [1, 4, 64, 64]), ...);
//   const result = await readTensor(lib, out);         // Float32Array
//   lib.tvm.endScope();
//
// Scopes are tvmjs's: every TVM object made by a call (tensors, results) belongs to the innermost
// tvm.beginScope()/endScope() (or tvm.withNewScope) and is freed when it ends; detach what must live on.
// openVM's functions and readTensor manage their own objects and can be used anywhere.
//
// tvmjs is the pinned npm package @mlc-ai/web-runtime, a UMD bundle: Node loads it as CommonJS (a default
// export); a browser that imports it as a module (through an import map) gets `globalThis.tvmjs`. Pass
// `{ tvmjs }` to instantiateLibrary to use another copy.

import * as tvmjsImport from "@mlc-ai/web-runtime";

function defaultTvmjs() {
  const found = globalThis.tvmjs ?? tvmjsImport.default ?? tvmjsImport;
  if (typeof found?.instantiate !== "function") {
    throw new Error("tvmjs (@mlc-ai/web-runtime) did not load: no instantiate()");
  }
  return found;
}

// The WASI functions the linked wasm imports (stages/lib/wasm_link.py JS_IMPORTS lists them; keep the
// two in step). The runtime only writes to stdout/stderr (TVM's logging), reads clocks and may exit;
// there are no files and no environment. Output lines go to `logger`.
function wasiProvider(logger) {
  const ERRNO_SUCCESS = 0, ERRNO_BADF = 8, ERRNO_INVAL = 28;
  let memory;
  const pending = { 1: "", 2: "" };
  const recentErrors = []; // the last lines written to stderr
  const decoder = new TextDecoder();
  const imports = {
    fd_write(fd, iovs, iovsLen, nwritten) {
      if (fd !== 1 && fd !== 2) return ERRNO_BADF;
      const view = new DataView(memory.buffer);
      let total = 0;
      for (let i = 0; i < iovsLen; ++i) {
        const ptr = view.getUint32(iovs + 8 * i, true);
        const len = view.getUint32(iovs + 8 * i + 4, true);
        pending[fd] += decoder.decode(new Uint8Array(memory.buffer, ptr, len));
        total += len;
      }
      const lines = pending[fd].split("\n");
      pending[fd] = lines.pop();
      for (const line of lines) {
        if (fd === 2) recentErrors.push(line);
        logger(fd === 2 ? `[tvm stderr] ${line}` : `[tvm] ${line}`);
      }
      recentErrors.splice(0, recentErrors.length - 20);
      view.setUint32(nwritten, total, true);
      return ERRNO_SUCCESS;
    },
    fd_read: () => ERRNO_BADF,
    fd_close: () => ERRNO_BADF,
    fd_seek: () => ERRNO_BADF,
    environ_sizes_get(countPtr, sizePtr) {
      const view = new DataView(memory.buffer);
      view.setUint32(countPtr, 0, true);
      view.setUint32(sizePtr, 0, true);
      return ERRNO_SUCCESS;
    },
    environ_get: () => ERRNO_SUCCESS,
    clock_time_get(clockId, _precision, timePtr) {
      // 0: realtime; 1..3: monotonic and cpu-time clocks, all served by performance.now().
      if (clockId < 0 || clockId > 3) return ERRNO_INVAL;
      const ms = clockId === 0 ? Date.now() : performance.now();
      new DataView(memory.buffer).setBigUint64(timePtr, BigInt(Math.round(ms * 1e6)), true);
      return ERRNO_SUCCESS;
    },
    // The runtime is built without C++ exception support (as TVM's own web build): a failed check prints
    // its message to stderr and exits. The error carries that message; the instance must be discarded.
    proc_exit(code) {
      throw new Error(`TVM runtime aborted (exit code ${code}):\n${recentErrors.join("\n")}`);
    },
  };
  return {
    imports: { env: {}, wasi_snapshot_preview1: imports },
    // Called by tvmjs once the instance exists: run the C++ static constructors (they register the
    // runtime's global functions and every submodule's system-library symbols).
    start(instance) {
      memory = instance.exports.memory;
      instance.exports._initialize();
    },
  };
}

/**
 * Instantiates the linked wasm with tvmjs and binds it to `gpuDevice` (a GPUDevice, from the browser's
 * navigator.gpu or Node's `webgpu` package; request it with `deviceLimits(adapter)`).
 * Returns a handle: { tvm (the tvmjs Instance), tvmjs, gpu and cpu (DLDevices), gpuErrors (messages of
 * uncaptured WebGPU errors so far; tvmjs also prints them with console.error) }.
 * `handle.tvm.dispose()` frees everything, the GPUDevice included (tvmjs destroys it).
 * A failed check inside the runtime throws "TVM runtime aborted ..." and leaves the instance unusable.
 */
export async function instantiateLibrary(wasmBytes, gpuDevice, { logger = console.log, tvmjs } = {}) {
  tvmjs = tvmjs ?? defaultTvmjs();
  const tvm = await tvmjs.instantiate(wasmBytes, wasiProvider(logger), logger);
  tvm.initWebGPU(gpuDevice);
  submitEvery(tvm.lib.webGPUContext, SUBMIT_EVERY_DISPATCHES);
  // WebGPU validation errors (a shader WGSL rejects, a binding over a limit) do not make the call fail:
  // the dispatch is dropped and the output is garbage. Keep them where callers and tests can look.
  const gpuErrors = [];
  gpuDevice.addEventListener("uncapturederror", (event) => {
    const message = event.error?.message ?? String(event);
    gpuErrors.push(message);
    logger(`[webgpu error] ${message}`);
  });
  return { tvm, tvmjs, gpu: tvm.webgpu(0), cpu: tvm.cpu(0), gpuErrors };
}

// tvmjs records every dispatch into one command encoder and submits it only when something waits on the GPU
// (a read or a sync), so during a UNet step the GPU idles until all ~1000 of its dispatches are encoded.
// Submitting every few dozen dispatches lets the GPU run while JavaScript encodes the rest. tvmjs 0.27 has no
// setting for this: the hook wraps its `pendingEncoder` field, which each dispatch reads before it opens a
// compute pass (so no pass is ever open when it submits). Dispatch buffers are reused only after a submit,
// which is what tvmjs's own pool expects.
const SUBMIT_EVERY_DISPATCHES = 64;

function submitEvery(context, dispatches) {
  if (!context || !("pendingEncoder" in context) || !("pendingDispatchCount" in context)) return; // another tvmjs
  let encoder = context.pendingEncoder;
  let submitting = false;
  Object.defineProperty(context, "pendingEncoder", {
    configurable: true,
    get() {
      if (encoder && !submitting && context.pendingDispatchCount >= dispatches) {
        submitting = true;
        try {
          context.flushCommands();
        } finally {
          submitting = false;
        }
      }
      return encoder;
    },
    set(value) {
      encoder = value;
    },
  });
}

// tvm.withNewScope without its flaw: a throwing action would leave the scope open and the stack skewed.
function inScope(tvm, action) {
  tvm.beginScope();
  try {
    return action();
  } finally {
    tvm.endScope();
  }
}

/**
 * Opens the Relax VM of the system library compiled with `system_lib_prefix` = `prefix` (e.g.
 * "sd15_unet_"). tvmjs's systemLib()/createVirtualMachine() only reach the library without a prefix;
 * tvm-ffi's global `ffi.SystemLib(prefix)` returns the one with that prefix.
 * Returns { prefix, vm, fn(name), dispose() }; fn(name) is the VM function (cached, valid until dispose).
 */
export function openVM(handle, prefix) {
  const { tvm, tvmjs, gpu } = handle;
  const vm = inScope(tvm, () => {
    // Any prefix gets a library; one that nothing registered under is merely empty.
    const library = tvm.getGlobalFunc("ffi.SystemLib")(prefix);
    const load = library.getFunction("vm_load_executable");
    if (typeof load !== "function") {
      throw new Error(`no Relax VM with system-library prefix "${prefix}" in this wasm`);
    }
    const executable = tvm.detachFromCurrentScope(load());
    return new tvmjs.VirtualMachine(executable, gpu);
  });
  const functions = new Map();
  return {
    prefix,
    vm,
    fn(name) {
      if (!functions.has(name)) {
        const f = inScope(tvm, () => {
          const found = vm.getFunction(name);
          if (typeof found !== "function") throw new Error(`the "${prefix}" VM has no function "${name}"`);
          return tvm.detachFromCurrentScope(found);
        });
        functions.set(name, f);
      }
      return functions.get(name);
    },
    dispose() {
      for (const f of functions.values()) f.dispose();
      functions.clear();
      vm.dispose();
    },
  };
}

/**
 * Creates the compute pipelines of the kernels of `vms` (openVM results) with createComputePipelineAsync, all
 * requested at once, and hands each to tvmjs, which then dispatches it instead of creating it at its first call
 * (tvmjs's own asyncLoadWebGPUPipelines, but leaving out kernels that bind more storage buffers than the device
 * allows: one that is never called, such as a five-term lincomb on an 8- or 10-buffer adapter, must not fail
 * the load; one that is called still fails then, with WebGPU's message). Resolves to {made, skipped} pipeline
 * counts when all are made; onProgress(done, total) per library.
 */
export async function compileShaders(handle, vms, onProgress = () => {}) {
  const { tvm } = handle;
  const context = tvm.lib.webGPUContext;
  const maxBuffers = (handle.device ?? context.device).limits.maxStorageBuffersPerShaderStage;
  let done = 0, made = 0, skipped = 0;
  await Promise.all(vms.map(async ({ vm }) => {
    const [fmap, getShader, update] = inScope(tvm, () => {
      const mod = vm.getInternalModule();
      return [JSON.parse(mod.getFunction("webgpu.get_fmap", true)()),
        tvm.detachFromCurrentScope(mod.getFunction("webgpu.get_shader")),
        tvm.detachFromCurrentScope(mod.getFunction("webgpu.update_prebuild"))];
    });
    try {
      const fits = Object.values(fmap).filter((f) => f.arg_types.filter((t) => t === "handle").length <= maxBuffers);
      skipped += Object.keys(fmap).length - fits.length;
      await Promise.all(fits.map(async (finfo) => {
        const pipeline = await context.createShaderAsync(finfo, getShader(finfo.name));
        inScope(tvm, () => update(finfo.name, pipeline));
        made += 1;
      }));
    } finally {
      getShader.dispose();
      update.dispose();
    }
    onProgress(++done, vms.length);
  }));
  return { made, skipped };
}

/**
 * Makes tvmjs create `kernels` ({kernel name: {wgsl, workgroups_x}}) in place of the library's own WGSL for those
 * kernels, at load (compileShaders) and at a first dispatch alike: the float16 libraries' tensor-core kernels
 * (stages/lib/subgroup_matrix.py). They keep the bindings of the kernel they replace; the host code still
 * computes TVM's grid, which a replacement may cut finer: its dispatches get `workgroups_x` times the workgroups
 * along x.
 */
export function replaceKernels(handle, kernels) {
  const context = handle.tvm.lib.webGPUContext;
  if (!handle.replacedKernels) {
    const replaced = (handle.replacedKernels = new Map());
    handle.kernelsReplaced = new Set(); // those created so far
    const pick = (finfo, code) => replaced.has(finfo.name) ? replaced.get(finfo.name).wgsl : code;
    // tvmjs's dispatch function takes the buffers and scalars, then the extent of each launch tag that is a grid
    // or workgroup axis (blockIdx.x, threadIdx.x, ...), in the tags' order
    const finer = (finfo, submit) => {
      if (!replaced.has(finfo.name)) return submit;
      handle.kernelsReplaced.add(finfo.name);
      const scale = replaced.get(finfo.name).workgroups_x;
      if (scale === 1) return submit;
      const axes = finfo.launch_param_tags.filter((tag) => /^(blockIdx|threadIdx)\./.test(tag));
      const at = axes.indexOf("blockIdx.x");
      if (at < 0) throw new Error(`${finfo.name}: a kernel without blockIdx.x cannot take ${scale} x its workgroups`);
      return (...args) => {
        args[args.length - axes.length + at] *= scale;
        return submit(...args);
      };
    };
    const createShader = context.createShader.bind(context);
    const createShaderAsync = context.createShaderAsync.bind(context);
    context.createShader = (finfo, code) => finer(finfo, createShader(finfo, pick(finfo, code)));
    context.createShaderAsync = async (finfo, code) => finer(finfo, await createShaderAsync(finfo, pick(finfo, code)));
  }
  for (const [name, record] of Object.entries(kernels)) handle.replacedKernels.set(name, record);
}

/** Whether `adapter` is a CPU implementation (SwiftShader, lavapipe/llvmpipe): there, creating every pipeline
 * ahead only front-loads compilation that runs on the same few cores, for kernels a run may never call. */
export function softwareAdapter(adapter) {
  const info = adapter?.info ?? {};
  return Boolean(info.isFallbackAdapter || adapter?.isFallbackAdapter) ||
    /swiftshader|llvmpipe|lavapipe/i.test([info.vendor, info.architecture, info.device, info.description].join(" "));
}

/**
 * Runs a library's load-time weight transform (`<function>_prepare`, e.g. Winograd-transformed convolution
 * weights, too large to download) on the stored weights and returns what the function takes instead, detached
 * (the caller disposes them). The stored tensors are disposed: those passed through live on in the result.
 */
export function prepareParams(handle, vm, name, stored) {
  const { tvm } = handle;
  try {
    return inScope(tvm, () => {
      const out = vm.fn(name)(tvm.makeTVMArray(stored));
      const prepared = [];
      for (let i = 0; i < out.size(); i++) prepared.push(tvm.detachFromCurrentScope(out.get(i)));
      return prepared;
    });
  } finally {
    for (const t of stored) t.dispose();
  }
}

const TYPED_ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  float16: Uint16Array, // raw half-precision bits
  int64: BigInt64Array,
};

function dtypeOf(array) {
  for (const [dtype, Type] of Object.entries(TYPED_ARRAYS)) {
    if (dtype !== "float16" && array instanceof Type) return dtype;
  }
  throw new Error(`no TVM dtype for ${array?.constructor?.name}`);
}

/**
 * A new tensor on the GPU holding `array` (a typed array) with `shape` ([] for a scalar). The dtype
 * follows the array type unless given (needed for "float16", given as a Uint16Array of bits).
 * The tensor belongs to the current scope.
 */
export function toGPU(handle, array, shape, dtype = dtypeOf(array)) {
  const count = shape.reduce((a, b) => a * b, 1);
  if (array.length !== count) {
    throw new Error(`toGPU: ${array.length} values for shape [${shape}] (${count})`);
  }
  const tensor = handle.tvm.empty(shape, dtype, handle.gpu);
  tensor.copyFromRawBytes(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return tensor;
}

/**
 * Copies `tensor` (on any device) back to JavaScript once the GPU work queued before it is done.
 * Returns a typed array matching its dtype (see TYPED_ARRAYS; float16 comes back as raw Uint16 bits).
 */
export async function readTensor(handle, tensor) {
  const { tvm } = handle;
  const Type = TYPED_ARRAYS[tensor.dtype];
  if (Type === undefined) throw new Error(`readTensor: unsupported dtype ${tensor.dtype}`);
  // A detached staging tensor: scopes are a stack and must not stay open across the await.
  const staging = inScope(tvm, () => tvm.detachFromCurrentScope(tvm.empty(tensor.shape, tensor.dtype, handle.cpu)));
  try {
    inScope(tvm, () => staging.copyFrom(tensor));
    await handle.gpu.sync();
    const bytes = inScope(tvm, () => staging.toRawBytes());
    return new Type(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  } finally {
    staging.dispose();
  }
}

/**
 * The `requiredLimits` to ask `adapter.requestDevice()` for: the adapter's own maxima for the limits
 * large models hit (buffer sizes, storage buffers per stage, workgroup size and storage).
 */
export function deviceLimits(adapter) {
  const names = [
    "maxBufferSize",
    "maxStorageBufferBindingSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupStorageSize",
  ];
  return Object.fromEntries(names.filter((n) => adapter.limits[n] !== undefined).map((n) => [n, adapter.limits[n]]));
}

// Per-kernel GPU time with WebGPU timestamp queries, for development (bench/webgpu_sd.mjs --profile).
// tvmjs encodes one compute pass per kernel; this wraps the device so that, while active, every compute pass
// writes begin/end timestamps and is named after its pipeline's entry point (TVM's kernel name). Needs the
// "timestamp-query" feature; Dawn quantizes timestamps unless the toggle timestamp_quantization is disabled.

import { narrowToFloat16 } from "../web/runtime/params.js";

const PASSES_PER_SET = 2048; // WebGPU allows 4096 queries per set

export function installProfiler(device) {
  const pipelineNames = new WeakMap();
  const pending = [];
  let active = false;

  const createPipeline = device.createComputePipeline.bind(device);
  device.createComputePipeline = (desc) => {
    const pipeline = createPipeline(desc);
    pipelineNames.set(pipeline, desc.compute.entryPoint);
    return pipeline;
  };
  const createPipelineAsync = device.createComputePipelineAsync.bind(device);
  device.createComputePipelineAsync = async (desc) => {
    const pipeline = await createPipelineAsync(desc);
    pipelineNames.set(pipeline, desc.compute.entryPoint);
    return pipeline;
  };
  const createEncoder = device.createCommandEncoder.bind(device);
  device.createCommandEncoder = (desc) => {
    const encoder = createEncoder(desc);
    if (!active) return encoder;
    const querySet = device.createQuerySet({ type: "timestamp", count: 2 * PASSES_PER_SET });
    const names = [];
    const beginPass = encoder.beginComputePass.bind(encoder);
    encoder.beginComputePass = (passDesc = {}) => {
      const i = names.length;
      if (i >= PASSES_PER_SET) return beginPass(passDesc);
      names.push("?");
      const pass = beginPass({ ...passDesc, timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      const setPipeline = pass.setPipeline.bind(pass);
      pass.setPipeline = (p) => {
        names[i] = pipelineNames.get(p) ?? "?";
        return setPipeline(p);
      };
      return pass;
    };
    const finish = encoder.finish.bind(encoder);
    encoder.finish = (finishDesc) => {
      if (names.length) {
        const bytes = names.length * 16;
        const resolved = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
        const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        encoder.resolveQuerySet(querySet, 0, 2 * names.length, resolved, 0);
        encoder.copyBufferToBuffer(resolved, 0, readback, 0, bytes);
        pending.push({ readback, names });
      }
      return finish(finishDesc);
    };
    return encoder;
  };

  return {
    start() {
      active = true;
    },
    /** Stops recording; returns [{name, calls, ms}] sorted by total time. */
    async stop() {
      active = false;
      const totals = new Map();
      for (const { readback, names } of pending.splice(0)) {
        await readback.mapAsync(GPUMapMode.READ);
        const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
        readback.unmap();
        names.forEach((name, i) => {
          const ns = Number(stamps[2 * i + 1] - stamps[2 * i]);
          const entry = totals.get(name) ?? { name, calls: 0, ms: 0 };
          entry.calls += 1;
          entry.ms += ns / 1e6;
          totals.set(name, entry);
        });
      }
      return [...totals.values()].sort((a, b) => b.ms - a.ms);
    },
  };
}

// A tensor of `shape` and `dtype` on the GPU holding random values in [-1, 1) (float32, float16), or zeros
// (integer dtypes: indices, whose values must stay in range). Timing on zero-filled inputs can flatter a kernel.
// The values repeat every 2^20 elements, which changes nothing for timing and keeps filling 1 GiB quick.
export function randomTensor(tvm, gpu, { shape, dtype }) {
  const count = shape.reduce((a, b) => a * b, 1);
  const tensor = tvm.empty(shape, dtype, gpu);
  const chunk = new Float32Array(Math.min(count, 1 << 20)).map(() => Math.random() * 2 - 1);
  let values;
  if (dtype === "float32") values = new Float32Array(count);
  else if (dtype === "float16") values = new Uint16Array(count);
  else return tensor; // zero-filled by WebGPU
  const source = dtype === "float16" ? narrowToFloat16(chunk) : chunk;
  for (let i = 0; i < count; i += source.length) values.set(source.subarray(0, Math.min(source.length, count - i)), i);
  tensor.copyFromRawBytes(new Uint8Array(values.buffer));
  return tensor;
}

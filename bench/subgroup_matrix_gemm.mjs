// Tensor cores through WebGPU: a GEMM on `chromium-experimental-subgroup-matrix` (Dawn, allow_unsafe_apis; on
// NVIDIA also vulkan_enable_f16_on_nvidia), timed and checked at the UNets' linear-layer shapes. A first step of
// the subgroup-matrix path (issue 18, item 4): how fast the kernel shape can be before any of it enters a build.
//
//   node bench/subgroup_matrix_gemm.mjs [--family sd15|sdxl|all] [--json out.json] [--repeats 5]
//
// C[M, N] (float32) = A[M, K] x B[K, N], A and B float16 and row major: activations x the weights as the build
// stores them ([K, N]). Each workgroup stages a BM x KS tile of A and a KS x BN tile of B in workgroup memory
// (vec4 loads from storage), and its subgroups each multiply FM x FN fragments of 16 x 16 from there, accumulating
// in float32 (subgroup_matrix_result<f32>). Kinds:
//   staged   several subgroups per workgroup, each placed by @builtin(subgroup_id);
//   single   one subgroup per workgroup (offsets from workgroup_id alone), for a Dawn without subgroup_id;
//   direct   no staging: fragments loaded straight from the storage buffers, one subgroup per workgroup.
// Every kernel is checked before it is timed: 256 sampled outputs against float64 sums of the same float16
// inputs, relative L2 error at most 1e-3, else it is reported as wrong and not timed. Times: median over
// --repeats submissions of 20 back-to-back dispatches each, after one warm-up submission.
// With no adapter offering the feature it says so and exits 2.
//
// Run on the H200 before the fix below (Dawn's instance held for the whole run), the process aborted or hung after
// a few kernels; the figures in bench/results/2026-12-01-h200-subgroup-matrix-gemm.json come from a process per
// shape (--shape). On lavapipe, `--control --family small` showed the fault and its fix without a GPU.

import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { create, globals } from "webgpu";

const { values: opt } = parseArgs({
  options: {
    family: { type: "string", default: "all" },
    json: { type: "string" },
    repeats: { type: "string", default: "5" },
    only: { type: "string" }, // a kernel label, to run one
    list: { type: "boolean", default: false },
    shape: { type: "string" }, // one shape of the family, by name
    control: { type: "boolean", default: false },
  },
});

// (name, M, N, K): batch 2 x tokens rows; the linear layers of bench/gemm_kernels.py's SHAPES.
const SHAPES = {
  sd15: [["geglu64", 8192, 2560, 320], ["ffout64", 8192, 320, 1280], ["qkvo64", 8192, 320, 320],
         ["geglu32", 2048, 5120, 640], ["ffout32", 2048, 640, 2560], ["geglu16", 512, 10240, 1280]],
  // small shapes: for --control on a CPU Vulkan driver (lavapipe), to try the harness without a GPU
  small: [["s1", 256, 256, 64], ["s2", 512, 256, 128], ["s3", 256, 512, 64]],
  sdxl: [["geglu32", 2048, 10240, 1280], ["ffout32", 2048, 1280, 5120], ["qkvo32", 2048, 1280, 1280],
         ["geglu64", 8192, 5120, 640], ["ffout64", 8192, 640, 2560], ["qkvo64", 8192, 640, 640]],
};
const FRAG = 16;
const LANES = 32;

// kind, workgroup tile BM x BN, K step, subgroups along M x N
const CONFIGS = [
  { kind: "direct", bm: 32, bn: 64, ks: 16, sgm: 1, sgn: 1 },
  { kind: "direct", bm: 64, bn: 64, ks: 16, sgm: 1, sgn: 1 },
  { kind: "single", bm: 64, bn: 64, ks: 32, sgm: 1, sgn: 1 },
  { kind: "single", bm: 32, bn: 64, ks: 32, sgm: 1, sgn: 1 },
  { kind: "single", bm: 64, bn: 64, ks: 64, sgm: 1, sgn: 1 },
  { kind: "single", bm: 64, bn: 64, ks: 16, sgm: 1, sgn: 1 },
  { kind: "single", bm: 32, bn: 128, ks: 32, sgm: 1, sgn: 1 },
  { kind: "single", bm: 128, bn: 32, ks: 32, sgm: 1, sgn: 1 },
  { kind: "single", bm: 64, bn: 32, ks: 32, sgm: 1, sgn: 1 },
  { kind: "staged", bm: 64, bn: 64, ks: 32, sgm: 2, sgn: 2 },
  { kind: "staged", bm: 128, bn: 64, ks: 32, sgm: 2, sgn: 2 },
  { kind: "staged", bm: 64, bn: 128, ks: 32, sgm: 2, sgn: 2 },
  { kind: "staged", bm: 128, bn: 128, ks: 32, sgm: 2, sgn: 2 },
  { kind: "staged", bm: 128, bn: 128, ks: 32, sgm: 2, sgn: 4 },
  { kind: "staged", bm: 128, bn: 128, ks: 16, sgm: 2, sgn: 4 },
];
// --control: plain float16 kernels without subgroup matrices (one output per thread), on a device made without the
// unsafe toggles, to tell a fault of subgroup matrices from one of this harness or of Dawn's node bindings.
const CONTROLS = [4, 8, 16].map((bm) => ({ kind: "naive", bm, bn: 256 / bm, ks: 16, sgm: 1, sgn: 1 }));
const label = (c) => `${c.kind}-${c.bm}x${c.bn}-k${c.ks}-s${c.sgm}x${c.sgn}`;

const lines = (n, body) => Array.from({ length: n }, (_, i) => body(i)).join("\n");
const grid = (fm, fn, body) => lines(fm, (i) => lines(fn, (j) => body(i, j)));

/** WGSL for C = A x B at (m, n, k) with config `c`; `spelling` picks the builtins' form ("layout": the layout
 * as a template argument, "bool": the older column-major flag argument). */
function shader(c, m, n, k, spelling) {
  const fm = c.bm / c.sgm / FRAG;
  const fn = c.bn / c.sgn / FRAG;
  const threads = c.sgm * c.sgn * LANES;
  const left = "subgroup_matrix_left<f16, 16, 16>";
  const right = "subgroup_matrix_right<f16, 16, 16>";
  const load = (type, ptr, offset, stride) => spelling === "layout"
    ? `subgroupMatrixLoad<${type}, row_major>(${ptr}, ${offset}, ${stride})`
    : `subgroupMatrixLoad<${type}>(${ptr}, ${offset}, false, ${stride})`;
  const store = (ptr, offset, value, stride) => spelling === "layout"
    ? `subgroupMatrixStore<row_major>(${ptr}, ${offset}, ${value}, ${stride})`
    : `subgroupMatrixStore(${ptr}, ${offset}, ${value}, false, ${stride})`;
  const multi = c.kind === "staged";
  const header = `enable f16;\n${multi ? "enable subgroups;\n" : ""}enable chromium_experimental_subgroup_matrix;\n`;
  const sizes = `const M = ${m}u;\nconst N = ${n}u;\nconst K = ${k}u;\n`;
  const where = multi
    ? `  let sg_m = sg / ${c.sgn}u;\n  let sg_n = sg % ${c.sgn}u;\n`
    : "  let sg_m = 0u;\n  let sg_n = 0u;\n";
  const rows = `wg.y * ${c.bm}u + sg_m * ${fm * FRAG}u`;
  const cols = `wg.x * ${c.bn}u + sg_n * ${fn * FRAG}u`;
  const accs = grid(fm, fn, (i, j) => `  var acc_${i}_${j} = subgroup_matrix_result<f32, 16, 16>();`);
  const mma = grid(fm, fn, (i, j) => `      acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(l_${i}, r_${j}, acc_${i}_${j});`);
  const stores = grid(fm, fn, (i, j) =>
    `  ${store("&C", `(row0 + ${i * FRAG}u) * N + col0 + ${j * FRAG}u`, `acc_${i}_${j}`, "N")};`);
  const builtins = `@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32` +
    (multi ? ", @builtin(subgroup_id) sg: u32" : "");
  if (c.kind === "naive") {
    return `enable f16;\n${sizes}
@group(0) @binding(0) var<storage, read> A: array<f16>;
@group(0) @binding(1) var<storage, read> B: array<f16>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;

@compute @workgroup_size(${c.bn}, ${c.bm})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var sum = 0.0;
  for (var k0 = 0u; k0 < K; k0 += 1u) {
    sum += f32(A[id.y * K + k0]) * f32(B[k0 * N + id.x]);
  }
  C[id.y * N + id.x] = sum;
}
`;
  }
  if (c.kind === "direct") {
    return `${header}${sizes}
@group(0) @binding(0) var<storage, read> A: array<f16>;
@group(0) @binding(1) var<storage, read> B: array<f16>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;

@compute @workgroup_size(${threads})
fn main(${builtins}) {
${where}  let row0 = ${rows};
  let col0 = ${cols};
${accs}
  for (var k0 = 0u; k0 < K; k0 += 16u) {
${lines(fm, (i) => `    let l_${i} = ${load(left, "&A", `(row0 + ${i * FRAG}u) * K + k0`, "K")};`)}
${lines(fn, (j) => `    let r_${j} = ${load(right, "&B", `k0 * N + col0 + ${j * FRAG}u`, "N")};`)}
    {
${mma}
    }
  }
${stores}
}
`;
  }
  // A tile [BM, KS] and B tile [KS, BN] in workgroup memory, row major, filled with vec4 loads.
  const aVec = (c.bm * c.ks) / 4;
  const bVec = (c.ks * c.bn) / 4;
  // A fixed trip count (the tile's vec4s are a multiple of the threads), so the loop is uniform.
  const fill = (name, tile, vecs, rowVecs, global) => `    for (var t = 0u; t < ${vecs / threads}u; t += 1u) {
      let i = lid + t * ${threads}u;
      let r = i / ${rowVecs}u;
      let q = i % ${rowVecs}u;
      let v = ${global};
      let at = r * ${rowVecs * 4}u + q * 4u;
      ${tile}[at] = v.x; ${tile}[at + 1u] = v.y; ${tile}[at + 2u] = v.z; ${tile}[at + 3u] = v.w;
    }`;
  return `${header}${sizes}
@group(0) @binding(0) var<storage, read> A: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
var<workgroup> As: array<f16, ${c.bm * c.ks}>;
var<workgroup> Bs: array<f16, ${c.ks * c.bn}>;

@compute @workgroup_size(${threads})
fn main(${builtins}) {
${where}  let row0 = ${rows};
  let col0 = ${cols};
  let tile_row = wg.y * ${c.bm}u;
  let tile_col = wg.x * ${c.bn}u;
${accs}
  for (var k0 = 0u; k0 < K; k0 += ${c.ks}u) {
${fill("As", "As", aVec, c.ks / 4, `A[((tile_row + r) * K + k0) / 4u + q]`)}
${fill("Bs", "Bs", bVec, c.bn / 4, `B[((k0 + r) * N + tile_col) / 4u + q]`)}
    workgroupBarrier();
${lines(c.ks / FRAG, (s) => `    {
${lines(fm, (i) => `      let l_${i} = ${load(left, "&As", `(sg_m * ${fm * FRAG}u + ${i * FRAG}u) * ${c.ks}u + ${s * FRAG}u`, `${c.ks}u`)};`)}
${lines(fn, (j) => `      let r_${j} = ${load(right, "&Bs", `${s * FRAG * c.bn}u + sg_n * ${fn * FRAG}u + ${j * FRAG}u`, `${c.bn}u`)};`)}
${mma}
    }`)}
    workgroupBarrier();
  }
${stores}
}
`;
}

// float32 -> float16 bits, round to nearest even (normal and subnormal; no overflow in these inputs)
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function toHalf(x) {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  let mant = b & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    const half = (mant >>> shift) + (((mant >>> (shift - 1)) & 1) && ((mant & ((1 << (shift - 1)) - 1)) || ((mant >>> shift) & 1)) ? 1 : 0);
    return sign | half;
  }
  let h = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
  return h;
}
function fromHalf(h) {
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  const v = exp === 0 ? mant * 2 ** -24 : (1 + mant / 1024) * 2 ** (exp - 15);
  return h & 0x8000 ? -v : v;
}

function randomHalves(count, seed) {
  const out = new Uint16Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = toHalf((s / 2 ** 32) * 2 - 1);
  }
  return out;
}

async function main() {
  Object.assign(globalThis, globals);
  // Held for the whole run: Dawn's instance lives only as long as the object create() returns is reachable, and
  // once main() no longer used it, a garbage collection destroyed it under the device (aborts, hangs, segfaults).
  const gpu = globalThis.dawnInstance = create(opt.control ? ["enable-dawn-features=vulkan_enable_f16_on_nvidia"]
                                 : ["enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia"]);
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const feature = opt.control ? "shader-f16" : "chromium-experimental-subgroup-matrix";
  const kernels = opt.control ? CONTROLS : CONFIGS;
  if (!adapter?.features.has(feature)) {
    console.error(`no adapter offers ${feature} here (${adapter ? "features: " + [...adapter.features].join(", ") : "no adapter"})`);
    process.exit(2);
  }
  const features = [...new Set([feature, "shader-f16", "subgroups"])].filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
                      maxBufferSize: adapter.limits.maxBufferSize,
                      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
                      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup },
  });
  const info = adapter.info;
  console.log(`adapter: ${info.vendor} / ${info.architecture} / ${info.description}; features ${features.join(", ")}`);
  const configs = (info.subgroupMatrixConfigs ?? []).map((x) => `${x.componentType}->${x.resultComponentType} ${x.M}x${x.N}x${x.K}`);
  console.log(`subgroup matrix configs: ${configs.join(", ")}`);
  if (opt.list) {
    console.log(kernels.map(label).join(" "));
    process.exit(0);
  }
  let spelling = null;

  // An explicit layout, as the page's runtime makes (not "auto" and getBindGroupLayout).
  const bindLayout = device.createBindGroupLayout({ entries: [0, 1, 2].map((binding) => ({
    binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: binding < 2 ? "read-only-storage" : "storage" } })) });
  const layout = device.createPipelineLayout({ bindGroupLayouts: [bindLayout] });
  async function compile(code) {
    const module = device.createShaderModule({ code });
    try {
      return { pipeline: await device.createComputePipelineAsync({ layout, compute: { module, entryPoint: "main" } }) };
    } catch (err) {
      return { error: err.message };
    }
  }

  const families = opt.family === "all" ? ["sd15", "sdxl"] : [opt.family];
  if (opt.shape) for (const f of families) SHAPES[f] = SHAPES[f].filter(([name]) => name === opt.shape);
  const results = [];
  // One set of buffers, as large as the largest shape needs.
  const shapes = families.flatMap((f) => SHAPES[f]);
  const most = (f) => Math.max(...shapes.map(f));
  const storage = (size, usage) => device.createBuffer({ size, usage: usage | GPUBufferUsage.COPY_DST });
  const bufA = storage(most(([, m, , k]) => m * k * 2), GPUBufferUsage.STORAGE);
  const bufB = storage(most(([, , n, k]) => k * n * 2), GPUBufferUsage.STORAGE);
  const bufC = storage(most(([, m, n]) => m * n * 4), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
  // Every pipeline is made first, as the page's runtime does.
  spelling = opt.control ? "none" : (await compile(shader(CONFIGS[0], 64, 64, 64, "layout"))).pipeline ? "layout" : "bool";
  const pipelines = new Map();
  for (const family of families) {
    for (const [name, m, n, k] of SHAPES[family]) {
      for (const c of kernels) {
        if ((opt.only && label(c) !== opt.only) || m % c.bm || n % c.bn || k % c.ks) continue;
        pipelines.set(`${family}/${name}/${label(c)}`, await compile(shader(c, m, n, k, spelling)));
        console.error(`compiled ${family}/${name}/${label(c)}`);
      }
    }
  }
  for (const family of families) {
    for (const [name, m, n, k] of SHAPES[family]) {
      const a = randomHalves(m * k, 1 + m + k);
      const b = randomHalves(k * n, 7 + n);
      device.queue.writeBuffer(bufA, 0, a);
      device.queue.writeBuffer(bufB, 0, b);
      // sampled reference outputs
      const samples = [];
      let s = 12345;
      for (let t = 0; t < 256; t++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        const i = s % m;
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        const j = s % n;
        let sum = 0;
        for (let kk = 0; kk < k; kk++) sum += fromHalf(a[i * k + kk]) * fromHalf(b[kk * n + j]);
        samples.push([i, j, sum]);
      }
      const flops = 2 * m * n * k;
      for (const c of kernels) {
        if (opt.only && label(c) !== opt.only) continue;
        const row = { family, shape: name, m, n, k, kernel: label(c) };
        results.push(row);
        if (m % c.bm || n % c.bn || k % c.ks) {
          row.skipped = "shape not a tile multiple";
          continue;
        }
        const compiled = pipelines.get(`${family}/${name}/${label(c)}`);
        if (!compiled.pipeline) {
          row.error = compiled.error.slice(0, 600);
          console.log(`${family} ${name} ${label(c)}: does not compile: ${row.error}`);
          continue;
        }
        const { pipeline } = compiled;
        const bind = device.createBindGroup({ layout: bindLayout, entries: [
          { binding: 0, resource: { buffer: bufA } }, { binding: 1, resource: { buffer: bufB } },
          { binding: 2, resource: { buffer: bufC } }] });
        const run = async (times) => {
          const enc = device.createCommandEncoder();
          const pass = enc.beginComputePass();
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bind);
          for (let t = 0; t < times; t++) pass.dispatchWorkgroups(n / c.bn, m / c.bm);
          pass.end();
          device.queue.submit([enc.finish()]);
          await device.queue.onSubmittedWorkDone();
        };
        // check first
        const enc = device.createCommandEncoder();
        enc.clearBuffer(bufC);
        device.queue.submit([enc.finish()]);
        await run(1);
        // The sampled rows only.
        const readC = device.createBuffer({ size: samples.length * n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        const copy = device.createCommandEncoder();
        samples.forEach(([i], t) => copy.copyBufferToBuffer(bufC, i * n * 4, readC, t * n * 4, n * 4));
        device.queue.submit([copy.finish()]);
        await readC.mapAsync(GPUMapMode.READ);
        const out = new Float32Array(readC.getMappedRange().slice(0));
        readC.unmap();
        readC.destroy();
        let num = 0;
        let den = 0;
        samples.forEach(([, j, ref], t) => {
          num += (out[t * n + j] - ref) ** 2;
          den += ref ** 2;
        });
        row.rel_l2_err = Math.sqrt(num / den);
        if (!(row.rel_l2_err <= 1e-3)) {
          console.log(`${family} ${name} ${label(c)}: WRONG, relative error ${row.rel_l2_err}`);
          continue;
        }
        await run(20);
        const times = [];
        for (let r = 0; r < Number(opt.repeats); r++) {
          const t0 = performance.now();
          await run(20);
          times.push((performance.now() - t0) / 20);
        }
        times.sort((x, y) => x - y);
        row.ms = times[times.length >> 1];
        row.tflops = flops / row.ms / 1e9;
        console.log(`${family} ${name} ${m}x${n}x${k} ${label(c)}: ${row.ms.toFixed(3)} ms, ${row.tflops.toFixed(1)} TFLOP/s, err ${row.rel_l2_err.toExponential(2)}`);
      }
    }
  }
  console.log(`builtins spelling: ${spelling}`);
  if (opt.json) writeFileSync(opt.json, JSON.stringify({ adapter: info.description, spelling, features, results }, null, 1));
}

main().then(() => process.exit(0), (err) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});

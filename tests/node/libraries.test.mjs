// web/runtime/load.js's choice of library per submodule, without a GPU: float16 libraries where the device has
// their features (shader-f16) unless compute says float32; float32 everywhere else; an explicit "float16" on a
// device without them is a MissingFeatureError that says what to do. A float16 library's subgroup-matrix
// (tensor-core) kernels replace some of its own where the device has that feature too, with the library's own
// kernels as the fallback everywhere else.
//
//   node --test tests/node/libraries.test.mjs        (make test-node runs it with the other Node tests)

import assert from "node:assert/strict";
import { test } from "node:test";

import { FormatError, MissingFeatureError } from "../../web/runtime/errors.js";
import { checkSubgroupMatrixKernels, chooseLibraries, wantedFeatures } from "../../web/runtime/load.js";

const library = (prefix, features = []) => ({ prefix, features, largest_tensor_bytes: 4, functions: {} });
const MANIFEST = {
  submodules: {
    clip: { libraries: { float32: library("sd15_clip_"), float16: library("sd15_clip_f16_", ["shader-f16"]) } },
    unet: { libraries: { float32: library("sd15_unet_"), float16: library("sd15_unet_f16_", ["shader-f16"]) } },
    sched: { libraries: { float32: library("sd15_sched_") } },
  },
};
const prefixes = (chosen) => Object.fromEntries(Object.entries(chosen).map(([sub, lib]) => [sub, `${lib.compute} ${lib.prefix}`]));

test("a device with shader-f16 runs the float16 libraries where there are some, unless told float32", () => {
  const f16 = new Set(["shader-f16", "timestamp-query"]);
  assert.deepEqual(prefixes(chooseLibraries(MANIFEST, f16)),
    { clip: "float16 sd15_clip_f16_", unet: "float16 sd15_unet_f16_", sched: "float32 sd15_sched_" });
  assert.deepEqual(prefixes(chooseLibraries(MANIFEST, f16, "float16")), prefixes(chooseLibraries(MANIFEST, f16)));
  assert.deepEqual(prefixes(chooseLibraries(MANIFEST, f16, "float32")),
    { clip: "float32 sd15_clip_", unet: "float32 sd15_unet_", sched: "float32 sd15_sched_" });
  assert.deepEqual(wantedFeatures(MANIFEST), ["shader-f16"]);
  assert.deepEqual(wantedFeatures(MANIFEST, "float32"), []);
});

test("a device without shader-f16 runs float32, and refuses float16 with what to do instead", () => {
  assert.deepEqual(prefixes(chooseLibraries(MANIFEST, new Set())),
    { clip: "float32 sd15_clip_", unet: "float32 sd15_unet_", sched: "float32 sd15_sched_" });
  assert.throws(() => chooseLibraries(MANIFEST, new Set(), "float16"), (err) => err instanceof MissingFeatureError &&
    err.message.includes("needs the WebGPU feature(s) shader-f16") && err.message.includes("use float32 compute"));
  assert.throws(() => chooseLibraries(MANIFEST, new Set(), "half"), /compute must be one of auto, float32, float16, subgroup-matrix/);
});

const SGMM = ["shader-f16", "chromium-experimental-subgroup-matrix"];
const WITH_KERNELS = {
  submodules: {
    ...MANIFEST.submodules,
    unet: { libraries: { float32: library("sd15_unet_"), float16: { ...library("sd15_unet_f16_", ["shader-f16"]),
      subgroup_matrix: { path: "unet-f16/subgroup-matrix.v1.json", bytes: 10, sha256: "0", kernels: 28, features: SGMM } } } },
  },
};
const tensorCores = (chosen) => Object.entries(chosen).filter(([, lib]) => lib.subgroupMatrix).map(([sub]) => sub);

test("subgroup-matrix kernels run where the device has the feature; the float16 library's own kernels elsewhere", () => {
  const full = new Set(SGMM);
  assert.deepEqual(tensorCores(chooseLibraries(WITH_KERNELS, full)), ["unet"]);
  assert.deepEqual(tensorCores(chooseLibraries(WITH_KERNELS, full, "subgroup-matrix")), ["unet"]);
  assert.deepEqual(prefixes(chooseLibraries(WITH_KERNELS, full, "subgroup-matrix")), prefixes(chooseLibraries(WITH_KERNELS, full)));
  assert.deepEqual(tensorCores(chooseLibraries(WITH_KERNELS, full, "float16")), [], "float16 keeps TVM's kernels");
  assert.deepEqual(tensorCores(chooseLibraries(WITH_KERNELS, full, "float32")), []);
  assert.deepEqual(wantedFeatures(WITH_KERNELS), SGMM);
  assert.deepEqual(wantedFeatures(WITH_KERNELS, "subgroup-matrix"), SGMM);
  assert.deepEqual(wantedFeatures(WITH_KERNELS, "float16"), ["shader-f16"]);
  // The fallback: shader-f16 alone runs the same float16 library on its own kernels.
  const f16 = new Set(["shader-f16"]);
  assert.deepEqual(prefixes(chooseLibraries(WITH_KERNELS, f16)), prefixes(chooseLibraries(WITH_KERNELS, full)));
  assert.deepEqual(tensorCores(chooseLibraries(WITH_KERNELS, f16)), []);
});

test("subgroup-matrix compute is refused, with what to do, without the feature or without kernels", () => {
  assert.throws(() => chooseLibraries(WITH_KERNELS, new Set(["shader-f16"]), "subgroup-matrix"),
    (err) => err instanceof MissingFeatureError && err.message.includes("chromium-experimental-subgroup-matrix") &&
      err.message.includes("allow_unsafe_apis") && err.message.includes("use auto compute"));
  assert.throws(() => chooseLibraries(WITH_KERNELS, new Set(), "subgroup-matrix"),
    (err) => err instanceof MissingFeatureError && err.message.includes("shader-f16"));
  assert.throws(() => chooseLibraries(MANIFEST, new Set(SGMM), "subgroup-matrix"),
    (err) => err instanceof MissingFeatureError && err.message.includes("no subgroup-matrix kernels"));
});

test("a subgroup-matrix kernels file is read only in its own format: each kernel its WGSL and its grid factor", () => {
  const file = (kernels, version = 2) => ({ format: "websd-subgroup-matrix-kernels", version, features: SGMM, kernels });
  const attention = { wgsl: "enable f16;", workgroups_x: 4 };
  assert.deepEqual(checkSubgroupMatrixKernels(file({ k_kernel: attention }), "u"), { k_kernel: attention });
  for (const bad of [file({ k_kernel: "enable f16;" }, 1), file({ k_kernel: "enable f16;" }),
    file({ k_kernel: { wgsl: "x", workgroups_x: 0 } }), file({ k_kernel: { wgsl: "x", workgroups_x: 1.5 } }),
    file({ k_kernel: { workgroups_x: 1 } }), { ...file({}), format: "other" }]) {
    assert.throws(() => checkSubgroupMatrixKernels(bad, "unet-f16/subgroup-matrix.v1.json"),
      (err) => err instanceof FormatError && err.message.includes("unet-f16/subgroup-matrix.v1.json") &&
        err.message.includes("rebuild the model"));
  }
});

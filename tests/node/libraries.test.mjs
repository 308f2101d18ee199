// web/runtime/load.js's choice of library per submodule, without a GPU: float16 libraries where the device has
// their features (shader-f16) unless compute says float32; float32 everywhere else; an explicit "float16" on a
// device without them is a MissingFeatureError that says what to do.
//
//   node --test tests/node/libraries.test.mjs        (make test-node runs it with the other Node tests)

import assert from "node:assert/strict";
import { test } from "node:test";

import { MissingFeatureError } from "../../web/runtime/errors.js";
import { chooseLibraries, wantedFeatures } from "../../web/runtime/load.js";

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
  assert.throws(() => chooseLibraries(MANIFEST, new Set(), "half"), /compute must be one of auto, float32, float16/);
});

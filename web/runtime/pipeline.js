// Text to image on WebGPU: tokenizers -> text encoders -> scheduler loop (unet + lincomb) -> vae -> RGBA.
// The JavaScript twin of stages/lib/cpu_pipeline.py; the compiled functions are listed in docs/DESIGN.md.
//
// One class per model family, picked by the manifest's `family` (PIPELINES, pipelineClass): the families share
// the text encoders, the schedulers, the noise and the denoising loop, and differ only in what the UNet takes
// beside the latents, the timestep and the guidance scale (`conditioning`). The UNet's inputs are passed in the
// order its function record in the manifest lists them, by name.

import { AbortedError, FormatError, WebSDError, deviceLoss } from "./errors.js";
import { gaussianNoise } from "./noise.js";
import { ScheduleError, createScheduler } from "./schedulers/index.js";
import { readTensor, toGPU } from "./tvm.js";

const now = () => globalThis.performance.now();

/** SD 1.5: one text encoder; the UNet takes its hidden states. */
export class StableDiffusion {
  /**
   * @param handle     from instantiateLibrary()
   * @param manifest   the variant's model.json (checkManifest)
   * @param libraries  {submodule: the library it runs} (chooseLibraries(): prefix, compute, ...)
   * @param vms        {submodule: openVM()}
   * @param params     {submodule: tensors in its function's parameter order}
   * @param tokenizers {folder: loadTokenizer()}, the folders manifest.text_encoders[].tokenizer name
   * @param schedulers {name: parsed scheduler constants}, the family's (manifest.schedulers)
   */
  constructor({ handle, manifest, libraries = {}, vms, params, tokenizers, schedulers }) {
    Object.assign(this, { handle, manifest, libraries, vms, params, tokenizers, schedulers });
    this.busy = false;
  }

  get latentShape() {
    return this.manifest.latent_shape;
  }

  /** How much of `text` the text encoders read (tokenizer.js fit): the encoder that cuts it soonest. */
  fit(text) {
    const fits = this.manifest.text_encoders.map((e) => this.tokenizers[e.tokenizer].fit(text, e.max_length));
    return fits.reduce((a, b) => (b.dropped.length > a.dropped.length ? b : a));
  }

  /** `promise` (GPU work finishing), or a DeviceLostError as soon as the device is lost: work queued on a lost
   * device may never report back, and a generation must not wait for it forever. */
  _unlessLost(promise) {
    this._lost ??= this.handle.device ? deviceLoss(this.handle.device) : new Promise(() => {});
    return Promise.race([promise, this._lost]);
  }

  async _sync() {
    await this._unlessLost(this.handle.gpu.sync());
    const errors = this.handle.gpuErrors ?? [];
    if (errors.length) {
      throw new WebSDError(`the GPU rejected the work: ${errors.splice(0).slice(0, 3).join("; ")}`);
    }
  }

  _run(sub, fn, ...inputs) {
    return this.vms[sub].fn(fn)(...inputs, ...(this.params[sub] ?? []));
  }

  _lincomb = (coeffs, tensors) => {
    const c = toGPU(this.handle, Float32Array.from(coeffs, Math.fround), [coeffs.length]);
    return this.vms.sched.fn(`lincomb${tensors.length}`)(c, ...tensors);
  };

  async _decode(latents) {
    const packed = await this._unlessLost(readTensor(this.handle, this._run("vae", "vae", latents)));
    const { height, width } = this.manifest.image;
    return { rgba: new Uint8ClampedArray(packed.buffer), width, height };
  }

  /**
   * Each text encoder's outputs over [negative; prompt], in manifest order: [hidden] or, for a pooled encoder,
   * [hidden, pooled]. With zero_empty_negative, an empty negative prompt is zero embeddings (`keep` 0), as
   * diffusers' SDXL pipeline does, not the encoding of "".
   */
  _encode(prompt, negative) {
    const h = this.handle;
    const keep = Float32Array.of(negative === "" && this.manifest.zero_empty_negative ? 0 : 1, 1);
    return this.manifest.text_encoders.map(({ submodule, tokenizer, pooled, max_length: length }) => {
      const ids = this.tokenizers[tokenizer].encodePair(negative, prompt, length);
      const out = this._run(submodule, submodule, toGPU(h, ids, [2, length]), toGPU(h, keep, [2]));
      return pooled ? [out.get(0), out.get(1)] : [out]; // a pooled encoder returns a tuple (a tvmjs TVMArray)
    });
  }

  /** What the UNet takes besides latents, timestep and guidance, by input name: each text encoder's hidden states,
   * as `embeddings`, `embeddings_2`, ... in text_encoders order. */
  conditioning(encoded) {
    return Object.fromEntries(encoded.map(([hidden], i) => [i === 0 ? "embeddings" : `embeddings_${i + 1}`, hidden]));
  }

  /** The UNet's arguments in the order of its function record; a name nothing provides is a FormatError. */
  _unetArgs(named) {
    const { inputs } = this.manifest.submodules.unet.libraries.float32.functions.unet;
    return inputs.map(({ name }) => {
      if (!(name in named)) {
        throw new FormatError(`the ${this.manifest.variant} UNet takes ${name}, which the ${this.manifest.family} pipeline ` +
          `does not provide (it provides ${Object.keys(named).join(", ")}); rebuild the model or update the page`);
      }
      return named[name];
    });
  }

  /**
   * Generates one image. Options: prompt, negative, seed, steps, scheduler (one of manifest.schedulers; default
   * manifest.default_scheduler), guidance; onStep({step, total, ms}) after each UNet step; previewEvery (0 = never)
   * with onPreview({step, rgba, width, height}); signal (AbortSignal) checked between steps.
   * Returns { rgba, width, height, timings: { clip, steps: [ms...], vae, total } } (clip: all text encoders).
   */
  async generate({ prompt, negative = "", seed = 0, steps = 20, scheduler = this.manifest.default_scheduler,
                   guidance = 7.5, onStep, previewEvery = 0, onPreview, signal } = {}) {
    if (this.busy) throw new Error("a generation is already running");
    checkScheduler(this.manifest, scheduler);
    const sched = createScheduler(scheduler, this.schedulers[scheduler], steps);
    const { tvm } = this.handle;
    const h = this.handle;
    this.busy = true;
    // One tvmjs scope for the whole generation: every tensor made here (a few latent-sized ones per step)
    // is freed when it ends; only one generation runs at a time (busy), so the scope stack stays ordered.
    tvm.beginScope();
    try {
      const start = now();
      const conditioning = this.conditioning(this._encode(prompt, negative));
      await this._sync();
      const clipMs = now() - start;

      const noise = gaussianNoise(seed, this.latentShape);
      let latents = this._lincomb([sched.initNoiseSigma], [toGPU(h, noise, this.latentShape)]);
      const scale = toGPU(h, new Float32Array([guidance]), []);
      const stepMs = [];
      for (let i = 0; i < sched.numSteps; ++i) {
        if (signal?.aborted) throw new AbortedError("generation stopped");
        const t0 = now();
        const input = await sched.scaleModelInput(i, latents, this._lincomb);
        const timestep = toGPU(h, new Float32Array([sched.timestepExact(i)]), []);
        const noisePred = this._run("unet", "unet", ...this._unetArgs({ latents: input, timestep, ...conditioning, guidance: scale }));
        latents = await sched.step(i, noisePred, latents, this._lincomb);
        await this._sync();
        stepMs.push(now() - t0);
        onStep?.({ step: i + 1, total: sched.numSteps, ms: stepMs[i] });
        if (previewEvery > 0 && onPreview && i + 1 < sched.numSteps && (i + 1) % previewEvery === 0) {
          onPreview({ step: i + 1, ...(await this._decode(latents)) });
        }
      }
      const t1 = now();
      const image = await this._decode(latents);
      const vaeMs = now() - t1;
      return { ...image, timings: { clip: clipMs, steps: stepMs, vae: vaeMs, total: now() - start } };
    } finally {
      tvm.endScope();
      this.busy = false;
    }
  }

  dispose() {
    for (const list of Object.values(this.params)) for (const t of list) t.dispose();
    for (const vm of Object.values(this.vms)) vm.dispose();
  }
}

/**
 * SDXL: the UNet takes both encoders' hidden states, the second's pooled embedding (`text_embeds`) and the six
 * time ids (original size, crop top-left, target size), the same for both rows: no crop, the compiled image size.
 */
export class StableDiffusionXL extends StableDiffusion {
  conditioning(encoded) {
    const index = this.manifest.text_encoders.findIndex((e) => e.pooled);
    if (index < 0) throw new FormatError(`${this.manifest.variant}: an sdxl model needs a pooled text encoder; rebuild it`);
    const [, pooled] = encoded[index];
    const { height, width } = this.manifest.image;
    const row = [height, width, 0, 0, height, width];
    const timeIds = toGPU(this.handle, Float32Array.from([...row, ...row]), [2, row.length]);
    return { ...super.conditioning(encoded), text_embeds: pooled, time_ids: timeIds };
  }
}

/** A ScheduleError, listing the model's schedulers, when `name` is not one of them (the family decides which). */
export function checkScheduler(manifest, name) {
  if (!Object.hasOwn(manifest.schedulers, name)) {
    throw new ScheduleError(`${manifest.variant} (${manifest.family}) has no scheduler ${JSON.stringify(name)}; ` +
      `use one of ${Object.keys(manifest.schedulers).join(", ")}`);
  }
}

/** Manifest `family` -> its pipeline class. A new family is a class here and a row in stages/lib/models.py. */
export const PIPELINES = Object.freeze({ sd15: StableDiffusion, sdxl: StableDiffusionXL });

/** The pipeline class of `family`, or a FormatError naming the families this runtime knows. */
export function pipelineClass(family, where = "the model") {
  if (!Object.hasOwn(PIPELINES, family)) {
    throw new FormatError(`${where} is of family ${JSON.stringify(family)}, which this page cannot run; it runs ` +
      `${Object.keys(PIPELINES).join(", ")}. Update the page, or pick another model.`);
  }
  return PIPELINES[family];
}

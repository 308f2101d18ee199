// Text to image on WebGPU: tokenizer -> clip -> scheduler loop (unet + lincomb) -> vae -> RGBA.
// The JavaScript twin of stages/lib/cpu_pipeline.py; the compiled functions are listed in docs/DESIGN.md.

import { AbortedError, WebSDError } from "./errors.js";
import { gaussianNoise } from "./noise.js";
import { createScheduler } from "./schedulers/index.js";
import { readTensor, toGPU } from "./tvm.js";

const now = () => globalThis.performance.now();

export class StableDiffusion {
  /**
   * @param handle     from instantiateLibrary()
   * @param manifest   the variant's model.json
   * @param libraries  { clip, unet, vae, sched }: the library each runs (chooseLibraries(): prefix, compute, ...)
   * @param vms        { clip, unet, vae, sched } from openVM()
   * @param params     { clip, unet, vae }: tensors in each function's parameter order
   * @param tokenizer  from loadTokenizer()
   * @param schedulers { pndm, dpm, euler }: parsed scheduler constant files
   */
  constructor({ handle, manifest, libraries = {}, vms, params, tokenizer, schedulers }) {
    Object.assign(this, { handle, manifest, libraries, vms, params, tokenizer, schedulers });
    this.busy = false;
  }

  get latentShape() {
    return this.manifest.latent_shape;
  }

  async _sync() {
    await this.handle.gpu.sync();
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
    const packed = await readTensor(this.handle, this._run("vae", "vae", latents));
    const { height, width } = this.manifest.image;
    return { rgba: new Uint8ClampedArray(packed.buffer), width, height };
  }

  /**
   * Generates one image. Options: prompt, negative, seed, steps, scheduler ("pndm" | "dpm" | "euler"),
   * guidance; onStep({step, total, ms}) after each UNet step; previewEvery (0 = never) with
   * onPreview({step, rgba, width, height}); signal (AbortSignal) checked between steps.
   * Returns { rgba, width, height, timings: { clip, steps: [ms...], vae, total } }.
   */
  async generate({ prompt, negative = "", seed = 0, steps = 20, scheduler = "dpm", guidance = 7.5,
                   onStep, previewEvery = 0, onPreview, signal } = {}) {
    if (this.busy) throw new Error("a generation is already running");
    const consts = this.schedulers[scheduler];
    if (!consts) throw new Error(`unknown scheduler ${scheduler}; one of ${Object.keys(this.schedulers).join(", ")}`);
    const sched = createScheduler(scheduler, consts, steps);
    const { tvm } = this.handle;
    const h = this.handle;
    this.busy = true;
    // One tvmjs scope for the whole generation: every tensor made here (a few latent-sized ones per step)
    // is freed when it ends; only one generation runs at a time (busy), so the scope stack stays ordered.
    tvm.beginScope();
    try {
      const start = now();
      const ids = this.tokenizer.encodePair(negative, prompt);
      const embeddings = this._run("clip", "clip", toGPU(h, ids, [2, ids.length / 2]));
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
        const noisePred = this._run("unet", "unet", input, timestep, embeddings, scale);
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

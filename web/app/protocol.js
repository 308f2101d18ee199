// The page <-> worker protocol (after web-llm's message.ts): a closed set of request kinds, an id on every
// request, and three reply kinds only.
//
//   page -> worker   {id, kind, args}                        kind in REQUESTS
//   worker -> page   {id, kind: "progress", value}           any number, before the end
//                    {id, kind: "return", value}              the end: success
//                    {id, kind: "throw", error: {name, message, url}}   the end: failure
//
// Requests:
//   probe     {}                          -> {adapter, limits}: is there WebGPU, and which GPU
//   describe  {modelUrl}                  -> what the page shows before a download (family, image size, schedulers,
//                                            download and GPU buffer sizes); throws when this GPU cannot run it
//   load      {modelUrl}                  -> model info; progress: {phase, ...} (see worker.js)
//   generate  {settings, previewEvery}    -> {png (Uint8Array), width, height, timings}; progress: steps, previews
//   abort     {target}                    -> true: stops request `target` (a load or a generate)
//   unload    {}                          -> true: frees the GPU
//   fit       {texts}                     -> [{tokens, max, dropped}] per text, or null with no model loaded
//
// Error objects cross as {name, message, url}: `name` is the class name from web/runtime/errors.js.

export const REQUESTS = Object.freeze(["probe", "describe", "load", "generate", "abort", "unload", "fit"]);
export const REPLIES = Object.freeze(["progress", "return", "throw"]);

export function serializeError(err) {
  return { name: err?.name ?? "Error", message: err?.message ?? String(err), url: err?.url, stack: err?.stack };
}

/** An Error carrying the worker's name, message and url. */
export function deserializeError(error) {
  const err = new Error(error.message);
  err.name = error.name;
  if (error.url) err.url = error.url;
  if (error.stack) err.workerStack = error.stack;
  return err;
}

/** The page's end: call(kind, args, {onProgress, transfer}) -> promise of the "return" value. */
export class WorkerClient {
  constructor(worker) {
    this.worker = worker;
    this.nextId = 1;
    this.pending = new Map();
    worker.addEventListener("message", (event) => this._onMessage(event.data));
    worker.addEventListener("error", (event) => this._failAll(new Error(`the worker failed to start: ${event.message ?? "script error"}`)));
  }

  call(kind, args = {}, { onProgress, transfer = [] } = {}) {
    if (!REQUESTS.includes(kind)) throw new Error(`unknown request kind ${kind}`);
    const id = this.nextId++;
    const promise = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, onProgress }));
    promise.id = id;
    this.worker.postMessage({ id, kind, args }, transfer);
    return promise;
  }

  _onMessage({ id, kind, value, error }) {
    const entry = this.pending.get(id);
    if (!entry) return;
    if (kind === "progress") entry.onProgress?.(value);
    else if (kind === "return") {
      this.pending.delete(id);
      entry.resolve(value);
    } else if (kind === "throw") {
      this.pending.delete(id);
      entry.reject(deserializeError(error));
    }
  }

  _failAll(err) {
    for (const entry of this.pending.values()) entry.reject(err);
    this.pending.clear();
  }
}

/**
 * The worker's end: serve(handlers) answers each request with handlers[kind](args, {id, progress}).
 * progress(value, transfer) posts a progress reply for that request.
 */
export function serve(scope, handlers) {
  scope.addEventListener("message", async (event) => {
    const { id, kind, args } = event.data ?? {};
    const post = (message, transfer = []) => scope.postMessage({ id, ...message }, transfer);
    if (!REQUESTS.includes(kind) || !handlers[kind]) {
      post({ kind: "throw", error: serializeError(new Error(`unknown request kind ${kind}`)) });
      return;
    }
    try {
      const progress = (value, transfer) => post({ kind: "progress", value }, transfer);
      const { value, transfer } = (await handlers[kind](args ?? {}, { id, progress })) ?? {};
      post({ kind: "return", value }, transfer);
    } catch (err) {
      post({ kind: "throw", error: serializeError(err) });
    }
  });
}

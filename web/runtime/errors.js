// One Error subclass per failure a user can act on; each message says what to do. The page shows
// `message`; tests and the worker protocol use `name` (it survives structured cloning).

export class WebSDError extends Error {
  constructor(message, details = {}) {
    super(message);
    this.name = new.target.name;
    Object.assign(this, details);
  }
}

/** No navigator.gpu, no adapter, or no device. */
export class NoWebGPUError extends WebSDError {}

/** The model needs a feature (shader-f16) the adapter lacks. */
export class MissingFeatureError extends WebSDError {}

/** The model's buffers exceed the adapter's limits or memory. */
export class DeviceLimitError extends WebSDError {}

/** The GPU device was lost (driver reset, tab backgrounded too long, out of memory). */
export class DeviceLostError extends WebSDError {}

/**
 * A GPUDevice's `lost` promise as a promise that rejects with a DeviceLostError on a real loss and never settles
 * for reason "destroyed" (the runtime's own dispose).
 */
export function deviceLoss(device) {
  return device.lost.then((info) => {
    if (info.reason === "destroyed") return new Promise(() => {});
    throw new DeviceLostError(`The GPU device was lost (${info.message || info.reason}); the model must be set up on the GPU again.`);
  });
}

/** A file could not be fetched (HTTP error or network failure); `url` names it. Retrying may help. */
export class FetchError extends WebSDError {}

/** A file arrived but its sha256 differs from the manifest; `url` names it. */
export class IntegrityError extends WebSDError {}

/** A manifest, config or tensor cache has the wrong format or version, or disagrees with the library. */
export class FormatError extends WebSDError {}

/** The browser refused to store more in its cache. */
export class QuotaError extends WebSDError {}

/** Generation was stopped by the user. */
export class AbortedError extends WebSDError {}

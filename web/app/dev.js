// Developer tools, loaded only with ?dev=1 (main.js imports this module on demand; the normal page never
// fetches it): the adapter and its limits, load and per-stage generation timings, the files fetched from
// the network, and a JSON dump of all of it.

const ms = (x) => `${x.toFixed(1)} ms`;

export class DevPanel {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.log = { adapter: null, model: null, runs: [] };
    root.hidden = false;
    root.innerHTML = `<h2>Developer tools</h2>
      <p class="hint">Shown because the address has dev=1. Timings are wall-clock per stage, measured in the worker
      after each GPU synchronisation.</p>
      <div class="actions"><button type="button" class="secondary" data-dump>Download debug JSON</button></div>
      <h3>GPU</h3><pre data-adapter>probing…</pre>
      <h3>Model</h3><pre data-model>not loaded</pre>
      <h3>Generations</h3><table><thead><tr><th>#</th><th>settings</th><th>text encoder</th><th>UNet steps (median, min-max)</th>
      <th>VAE</th><th>total</th></tr></thead><tbody data-runs></tbody></table>
      <h3>Last UNet step times</h3><pre data-steps>-</pre>`;
    root.querySelector("[data-dump]").addEventListener("click", () => this.dump());
  }

  adapter(info) {
    this.log.adapter = info;
    this.root.querySelector("[data-adapter]").textContent = JSON.stringify(info, null, 1);
  }

  modelLoaded(info) {
    this.log.model = info;
    this.root.querySelector("[data-model]").textContent =
      `${info.variant} (${info.image.width}x${info.image.height}), loaded in ${ms(info.loadMs)}\n` +
      `fetched from the network: ${info.network.length ? info.network.join(", ") : "nothing (all cached)"}`;
  }

  generated(settings, timings) {
    this.log.runs.push({ settings, timings });
    const s = [...timings.steps].sort((a, b) => a - b);
    const row = document.createElement("tr");
    for (const text of [this.log.runs.length, `${settings.scheduler} ${settings.steps} steps, seed ${settings.seed}`,
      ms(timings.clip), `${ms(s[s.length >> 1])} (${ms(s[0])}-${ms(s[s.length - 1])})`, ms(timings.vae), ms(timings.total)]) {
      row.append(Object.assign(document.createElement("td"), { textContent: String(text) }));
    }
    this.root.querySelector("[data-runs]").append(row);
    this.root.querySelector("[data-steps]").textContent = timings.steps.map((t, i) => `${i + 1}: ${ms(t)}`).join("\n");
  }

  dump() {
    const blob = new Blob([JSON.stringify({ ...this.log, userAgent: navigator.userAgent, at: new Date().toISOString() }, null, 1)],
      { type: "application/json" });
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: "websd-debug.json" });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }
}

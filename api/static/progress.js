// A job's course beyond its progress bar: the stages with their time, the curve the server
// keeps (so it survives a reload and shows for a finished job), and previews of the output
// from the fit's latest snapshot while it trains.
import * as api from "./api.js";

// The stages a person sees, in order; training the experts alone is still fitting.
const STAGES = [
  { name: "pretrain", label: "Pretraining the manager" },
  { name: "fit", label: "Fitting" },
  { name: "evaluate", label: "Evaluating" },
];
const SHOWN_STAGE = { pretrain: "pretrain", fit: "fit", experts: "fit", evaluate: "evaluate" };
const TICK_MS = 1000;

/** The server's curve ({every, step, loss, metric} columns) as [{step, loss, metric}]. */
export function historyPoints(history) {
  if (!history) return [];
  return history.step.map((step, i) => ({ step, loss: history.loss[i], metric: history.metric[i] }));
}

function formatSeconds(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The stage list: each stage done, running (its time ticking) or to come. */
export class StageList {
  constructor(list) {
    this.list = list;
    this.items = []; // [{name, seconds, since}]: `since` is when `seconds` was read, if it runs
    this.timer = null;
  }

  /** The stages as the job records them; the running one ticks on while the job is active. */
  fromJob(job) {
    const now = performance.now();
    const active = !api.TERMINAL.has(job.status);
    this.items = (job.stages || []).map((stage) => ({
      name: stage.name, seconds: stage.elapsed_s, since: active && !stage.ended_at ? now : null,
    }));
    this.render();
    this.tick(active);
  }

  /** A progress report's stage: a new one starts now (the server's times come with the next
   * status event). */
  progress(stage) {
    const name = SHOWN_STAGE[stage];
    const last = this.items[this.items.length - 1];
    if (!name || last?.name === name) return;
    const now = performance.now();
    if (last) Object.assign(last, { seconds: this.elapsed(last, now), since: null });
    this.items.push({ name, seconds: 0, since: now });
    this.render();
  }

  elapsed(item, now = performance.now()) {
    return item.since === null ? item.seconds : item.seconds + (now - item.since) / 1000;
  }

  render() {
    const reached = Math.max(-1, ...this.items.map((item) => STAGES.findIndex((s) => s.name === item.name)));
    this.list.replaceChildren(...STAGES.map(({ name, label }, index) => {
      const item = this.items.find((candidate) => candidate.name === name);
      const entry = document.createElement("li");
      let state = "pending";
      let detail = "to come";
      if (item) {
        state = item.since === null ? "done" : "running";
        detail = formatSeconds(this.elapsed(item));
      } else if (index < reached) {
        [state, detail] = ["skipped", "skipped"]; // a resumed fit had pretrained already
      }
      entry.dataset.state = state;
      if (state === "running") entry.setAttribute("aria-current", "step");
      entry.textContent = `${label}: ${detail}`;
      return entry;
    }));
  }

  tick(on) {
    clearInterval(this.timer);
    this.timer = on ? setInterval(() => this.render(), TICK_MS) : null;
  }

  stop() {
    this.tick(false);
  }
}

// What a preview shows, by kind: the outputs that render quickly from a snapshot (a mesh takes
// a marching-cubes pass, so a 3D fit shows its result only).
const PREVIEW_OUTPUTS = {
  image: [
    { output: "reconstruction", params: {}, alt: "The reconstruction so far" },
    { output: "experts", params: {}, alt: "The expert map so far" },
  ],
  audio: [{ output: "experts", params: { format: "png" }, alt: "Which expert plays each moment, so far" }],
};

/** The reconstruction and expert map of a running fit, fetched each time a newer snapshot is
 * stored (the job's `snapshot_step`), one fetch at a time. */
export class Previews {
  constructor(container) {
    this.container = container;
    this.images = [...container.querySelectorAll("img")];
    this.urls = [];
    this.shown = null; // the snapshot step on screen
    this.wanted = null; // the newest step the job reported
    this.controller = null;
  }

  /** Follow `job`: fetch its previews when its snapshot step has advanced. */
  update(job) {
    const outputs = PREVIEW_OUTPUTS[job.kind];
    if (job.status !== "running" || !outputs || job.snapshot_step === null) {
      if (api.TERMINAL.has(job.status)) this.clear();
      return;
    }
    this.wanted = job.snapshot_step;
    if (this.controller || this.wanted === this.shown) return;
    this.fetch(job, outputs);
  }

  async fetch(job, outputs) {
    const step = this.wanted;
    this.controller = new AbortController();
    const { signal } = this.controller;
    try {
      // no-store: the same URL answers a newer snapshot each time.
      const blobs = await Promise.all(outputs.map(({ output, params }) =>
        api.getBlob(api.jobUrl(job.id, output, params), { signal, cache: "no-store" })));
      this.show(outputs, blobs, step);
    } catch {
      // A preview is a glimpse, not a result: one that fails (the fit ended as it was asked
      // for, a busy renderer, an abort) waits for the next snapshot, with no message.
      return;
    } finally {
      if (this.controller?.signal === signal) this.controller = null;
    }
    if (this.wanted !== this.shown) this.fetch(job, outputs);
  }

  show(outputs, blobs, step) {
    this.revoke();
    this.urls = blobs.map((blob) => URL.createObjectURL(blob));
    this.images.forEach((image, i) => {
      image.hidden = i >= this.urls.length;
      if (i >= this.urls.length) return;
      image.src = this.urls[i];
      image.alt = outputs[i].alt;
    });
    this.container.hidden = false;
    this.container.querySelector(".preview-step").textContent = `Preview at step ${step}, from the fit's latest snapshot`;
    this.shown = step;
  }

  revoke() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }

  clear() {
    this.controller?.abort();
    this.controller = null;
    this.revoke();
    this.images.forEach((image) => image.removeAttribute("src"));
    this.container.hidden = true;
    this.shown = this.wanted = null;
  }
}

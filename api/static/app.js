// The page: upload and start a fit, follow its training live, explore the result, manage jobs.
import * as api from "./api.js";
import { drawChart } from "./chart.js";
import { copyCurlOnClick } from "./curl.js";
import { describeEstimate, guessKind, pixelCount } from "./estimate.js";
import { describeMetrics, poorResult, progressMetric } from "./metrics.js";
import { downloadOnClick, forgetJob } from "./outputs.js";
import { historyPoints, Previews, StageList } from "./progress.js";

const $ = (id) => document.getElementById(id);

// The kinds the service reads, by name, from its registry (GET /v1/kinds): what a person calls
// each ("3D shape" for the API's sdf), what tells an upload's kind, a step's cost, the results too
// poor to keep. Should that request fail: kinds by their own names, no guess and no result view.
const KINDS = await api.getKinds()
  .then((kinds) => new Map(kinds.map((kind) => [kind.name, kind])), () => new Map());
const kindLabel = (kind) => KINDS.get(kind)?.label || kind;
const STAGES = {
  pretrain: "pretraining the manager", experts: "training experts only", evaluate: "evaluating the result",
};
const POLL_MS = 4000; // job list refresh while some job is queued or running
const PAGE_SIZE = 20;
const MAX_LISTED = 100; // the API's largest page (GET /v1/jobs?limit=)

// job id -> the upload ({ blob, url }: the file and its object URL), as this browser sent it, or
// else fetched from the API. Views read it from here: the page's CSP lets fetch reach only the
// API, not blob: URLs.
const originals = new Map();

/** The upload (a promise), fetched from `/input` once when this tab did not send it. */
function original(job) {
  if (!originals.has(job.id)) {
    const fetched = api.getBlob(job.urls.input).then((blob) => ({ blob, url: URL.createObjectURL(blob) }));
    fetched.catch(() => originals.delete(job.id)); // the next view of the job asks again
    originals.set(job.id, fetched);
  }
  return Promise.resolve(originals.get(job.id));
}

const state = {
  job: null, points: [], metricName: "", stopFollowing: null, shownResult: null,
  unmountView: null, listed: PAGE_SIZE,
};
const stages = new StageList($("job-stages"));
const previews = new Previews($("job-previews"));

/** Show an error in `element` (or hide it when `error` is null): an API problem's title in
 * bold, then its detail. */
function showError(element, error) {
  element.hidden = !error;
  element.replaceChildren();
  if (!error) return;
  if (error.detail && error.detail !== error.title) {
    const title = document.createElement("strong");
    title.textContent = error.title;
    element.append(title, document.createElement("br"), error.detail);
  } else {
    element.append(error.message || String(error));
  }
}

const jobError = (error) => showError($("job-error"), error);

// ---- New fit -------------------------------------------------------------------------------

function chooseFile(file) {
  $("drop-text").textContent = file
    ? `${file.name} (${(file.size / 1024).toFixed(1)} kB)`
    : "Drop a file here, or click to choose one";
  showError($("form-error"), null);
}

function setUpDrop() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => chooseFile(input.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (!event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    chooseFile(input.files[0]);
  });
}

/** "a, b or c". */
const either = (items) => [items.slice(0, -1).join(", "), items.at(-1)].filter(Boolean).join(" or ");

/** Say what the service reads, kind by kind with its formats, as GET /v1/kinds declares it: a
 * kind the service gains shows here with no edit. Without it, the HTML's own words stay. */
function showKinds() {
  if (!KINDS.size) return;
  const kinds = [...KINDS.values()];
  $("kind-list").textContent = either(kinds.map((kind) => kind.label));
  const formats = (kind) => kind.suffixes.map((suffix) => suffix.slice(1).toUpperCase()).join(", ");
  const hint = either(kinds.map((kind) => `${kind.label} (${formats(kind)})`));
  $("file-hint").textContent = hint[0].toUpperCase() + hint.slice(1);
}

/** A field the page refuses to send, named as the form names it. */
class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// The form's choices and bounds come from GET /v1/options (declared once, in model/options.py),
// so a preset, model or activation the service gains shows here with no edit.
const CHOICES = ["preset", "model", "activation"];
// The whole numbers the form takes; `setUpOptions` adds the API's bounds.
const WHOLE_NUMBERS = { steps: { label: "Steps" }, experts: { label: "Experts" } };

/** Fill the selects with the API's choices, its default selected, and take its bounds. */
async function setUpOptions() {
  const { options } = await api.getOptions();
  const declared = Object.fromEntries(options.map((option) => [option.name, option]));
  for (const name of CHOICES) {
    const { choices, default: chosen } = declared[name];
    const items = choices.map(({ value, label }) => new Option(label, value, value === chosen, value === chosen));
    $(name).replaceChildren(...items);
  }
  for (const [name, field] of Object.entries(WHOLE_NUMBERS)) {
    Object.assign(field, { min: declared[name].minimum, max: declared[name].maximum });
  }
  $("experts-range").textContent = `, ${declared.experts.minimum} to ${declared.experts.maximum}`;
}

/** The field's whole number, or "" when left empty (the default); refuses anything else. */
function wholeNumber(name) {
  const { label, min, max } = WHOLE_NUMBERS[name];
  const text = $(name).value.trim();
  if (!text) return "";
  const range = max ? `from ${min} to ${max}` : `of ${min} or more`;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || (max && value > max)) {
    throw new FieldError(name, `${label} must be a whole number ${range} (got "${text}"), or empty for the default.`);
  }
  return String(value);
}

function fitForm() {
  const form = new FormData();
  const file = $("file").files[0];
  if (!file) throw new FieldError("file", "Choose a file to fit first.");
  form.append("file", file);
  for (const name of CHOICES) {
    if ($(name).value) form.append(name, $(name).value); // empty until the choices have loaded
  }
  for (const name of Object.keys(WHOLE_NUMBERS)) {
    const value = wholeNumber(name);
    if (value) form.append(name, value);
  }
  if ($("protocol").checked) form.append("protocol", "paper");
  if ($("time-budget").value) form.append("time_budget_s", $("time-budget").value);
  return { form, file };
}

/** Mark the fields `error` names as invalid, and only those. */
function markInvalid(error) {
  for (const name of ["file", ...Object.keys(WHOLE_NUMBERS)]) {
    $(name).toggleAttribute("aria-invalid", error?.field === name);
  }
  if (error?.field) $(error.field).focus();
}

/** The expected run time under the form, from the file, steps and budget as they stand. */
async function showEstimate() {
  const file = $("file").files[0];
  const steps = /^\d+$/.test($("steps").value.trim()) ? $("steps").value.trim() : "";
  const kind = file ? guessKind(file, [...KINDS.values()]) : null;
  const pixels = file ? await pixelCount(file, kind) : null;
  $("fit-estimate").textContent = describeEstimate({
    chosen: Boolean(file), kind, pixels, steps, budget: $("time-budget").value,
  });
}

async function submitFit(event) {
  event.preventDefault();
  const errors = $("form-error");
  let fit;
  try {
    fit = fitForm();
  } catch (error) {
    markInvalid(error);
    showError(errors, error);
    return;
  }
  markInvalid(null);
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const { form, file } = fit;
    const job = await api.createJob(form);
    originals.set(job.id, { blob: file, url: URL.createObjectURL(file) });
    showError(errors, null);
    openJob(job);
    refreshJobs();
  } catch (error) {
    showError(errors, error);
  } finally {
    button.disabled = false;
    button.textContent = "Start fit";
  }
}

// ---- One job -------------------------------------------------------------------------------

function describe(job) {
  const options = job.options || {};
  const parts = [kindLabel(job.kind), options.model, options.preset && `preset ${options.preset}`,
    options.steps && `${options.steps} steps`, job.created_at && new Date(job.created_at).toLocaleString()];
  return parts.filter(Boolean).join(" · ");
}

function formatEta(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function showProgress(progress) {
  if (!progress) return;
  const { step, total, loss, metric, metric_name: metricName, eta_s: eta, stage } = progress;
  state.metricName = metricName;
  const active = state.job && !api.TERMINAL.has(state.job.status);
  if (active) stages.progress(stage);
  $("job-progress").max = total || 1;
  $("job-progress").value = step || 0;
  $("job-step").textContent = [
    `step ${step} / ${total}`,
    active ? STAGES[stage] : "",
    active && eta > 0 ? `ETA ${formatEta(eta)}` : "", // a job that ended waits for nothing
    Number.isFinite(loss) ? `loss ${loss.toExponential(2)}` : "",
    Number.isFinite(metric) ? progressMetric(metricName).format(metric) : "",
  ].filter(Boolean).join(" · ");
  const last = state.points[state.points.length - 1];
  if (stage !== "pretrain" && (!last || step > last.step)) {
    state.points.push({ step, loss, metric });
    drawCharts();
  }
}

/** A chart's text alternative: where its curve starts and ends. */
function curveSummary(name, points, format) {
  const shown = points.filter((p) => Number.isFinite(p.value));
  if (!shown.length) return `${name}: no reports yet`;
  const [first, last] = [shown[0], shown[shown.length - 1]];
  return `${name}: ${format(first.value)} at step ${first.step}, ${format(last.value)} at step ${last.step}`;
}

function drawCharts() {
  const metric = progressMetric(state.metricName);
  const loss = state.points.map((p) => ({ step: p.step, value: p.loss }));
  const quality = state.points.map((p) => ({ step: p.step, value: p.metric }));
  $("chart-metric-caption").textContent = metric.label;
  drawChart($("chart-loss"), loss, { log: true });
  drawChart($("chart-metric"), quality, { log: metric.log, color: "#d55e00" });
  $("chart-loss").setAttribute("aria-label", curveSummary("Loss", loss, (v) => v.toExponential(2)));
  $("chart-metric").setAttribute("aria-label", curveSummary(metric.label, quality, metric.format));
}

function showMetrics(job) {
  $("job-metrics").replaceChildren(...describeMetrics(job.metrics).flatMap(({ key, name, value, better }) => {
    const term = document.createElement("dt");
    term.textContent = name;
    term.title = key; // the API's name, as in GET /metrics
    const definition = document.createElement("dd");
    definition.textContent = value;
    const direction = document.createElement("span");
    direction.className = "better";
    direction.textContent = better;
    definition.append(" ", direction);
    return [term, definition];
  }));
  const warning = job.status === "succeeded" ? poorResult(job, KINDS.get(job.kind)) : "";
  $("job-warning").hidden = !warning;
  $("job-warning").textContent = warning;
}

// Each kind's result view is its module api/static/KIND-view.js, loaded when a result of that
// kind is first shown (three.js is large). It exports its `markup` and
// mount(root, job, { original, showError }) -> unmount; `original()` is a promise of the upload.
function showResult(job) {
  state.unmountView?.();
  state.unmountView = null;
  const shown = {}; // this call's result, until another call replaces it
  state.shownResult = shown;
  const result = $("result");
  result.replaceChildren();
  if (job.status !== "succeeded" || !KINDS.has(job.kind)) return;
  import(`./${job.kind}-view.js`)
    .then(({ markup, mount }) => {
      if (state.shownResult !== shown) return; // another result (or none) is on show now
      const template = document.createElement("template"); // parses the module's own markup
      template.innerHTML = markup;
      result.replaceChildren(template.content);
      state.unmountView = mount(result, job, { original: () => original(job), showError: jobError });
    })
    .catch(jobError);
}

function showStatus(job) {
  const active = !api.TERMINAL.has(job.status);
  $("job-status").textContent = active && job.cancel_requested ? "canceling" : job.status;
  $("job-status").dataset.status = job.status;
  $("job-cancel").hidden = !active;
  $("job-weights").hidden = job.status !== "succeeded";
  $("job-weights").href = api.jobUrl(job.id, "weights");
  $("job-weights").download = `${api.fileStem(job)}-weights.zip`;
  $("job-curl").hidden = job.status !== "succeeded";
  $("training").hidden = !active && state.points.length === 0;
  jobError(job.status === "failed" && job.error
    ? new api.ApiError(job.error.title, job.error.detail) : null);
  showMetrics(job);
}

/** Show `job` in the job panel; follows its events until it ends. */
function openJob(job) {
  state.stopFollowing?.();
  state.stopFollowing = null;
  state.job = job;
  state.points = historyPoints(job.history); // kept by the server: the curve so far, or all of it
  state.metricName = "";
  stages.fromJob(job);
  previews.clear();
  previews.update(job);
  history.replaceState(null, "", `#job=${job.id}`);
  $("job").hidden = false;
  $("job-title").textContent = job.filename || `Job ${job.id.slice(0, 8)}`;
  $("job-meta").textContent = describe(job);
  $("job-step").textContent = "";
  $("job-progress").value = 0;
  $("job-curl-text").hidden = true;
  showStatus(job);
  showProgress(job.progress);
  drawCharts();
  showResult(job);
  markSelected();
  if (!api.TERMINAL.has(job.status)) {
    state.stopFollowing = api.followJob(job.id, {
      onProgress: showProgress,
      onStatus: jobUpdated,
      onError: jobError,
    });
  }
}

/** A newer copy of a job (a status event, a cancel's answer): show it if it is the open one. */
function jobUpdated(job) {
  if (state.job?.id !== job.id) return;
  state.job = job;
  stages.fromJob(job);
  previews.update(job);
  if (api.TERMINAL.has(job.status) && job.history) {
    state.points = historyPoints(job.history); // the server's curve, as a reload will draw it
    drawCharts();
  }
  showProgress(job.progress); // an ended job's line loses its stage and ETA
  showStatus(job);
  if (api.TERMINAL.has(job.status)) {
    showResult(job);
    refreshJobs();
  }
}

function closeJob() {
  state.stopFollowing?.();
  state.unmountView?.();
  stages.stop();
  previews.clear();
  Object.assign(state, {
    job: null, points: [], stopFollowing: null, shownResult: null, unmountView: null,
  });
  $("job").hidden = true;
  history.replaceState(null, "", location.pathname);
  markSelected();
}

async function cancel(id) {
  jobUpdated(await api.cancelJob(id));
  refreshJobs();
}

async function remove(id) {
  if (!window.confirm("Delete this job and all its outputs?")) return;
  await api.deleteJob(id);
  if (originals.has(id)) Promise.resolve(originals.get(id)).then(({ url }) => URL.revokeObjectURL(url), () => {});
  originals.delete(id);
  forgetJob(api.jobUrl(id));
  if (state.job?.id === id) closeJob();
  refreshJobs();
}

// ---- Job list ------------------------------------------------------------------------------

let pollTimer = null;

function jobRow(job) {
  const item = document.createElement("li");
  item.dataset.id = job.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.textContent = job.filename || job.id.slice(0, 8);
  open.setAttribute("aria-label", `Open ${open.textContent}`);
  const listError = (error) => showError($("jobs-error"), error);
  open.addEventListener("click", () => api.getJob(job.id).then(openJob).catch(listError));
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.status = job.status;
  badge.textContent = job.status;
  const kind = document.createElement("span");
  kind.className = "meta";
  kind.textContent = kindLabel(job.kind);
  const actions = document.createElement("span");
  actions.className = "row-actions";
  if (!api.TERMINAL.has(job.status)) {
    actions.append(button("Cancel", `Cancel ${open.textContent}`, () => cancel(job.id).catch(listError)));
  }
  if (job.status === "succeeded") {
    const weights = document.createElement("a");
    weights.className = "button";
    weights.href = api.jobUrl(job.id, "weights");
    weights.download = `${api.fileStem(job)}-weights.zip`;
    downloadOnClick(weights, listError);
    weights.textContent = "Weights";
    weights.setAttribute("aria-label", `Download weights of ${open.textContent}`);
    actions.append(weights);
  }
  actions.append(button("Delete", `Delete ${open.textContent}`, () => remove(job.id).catch(listError), "danger"));
  item.append(open, kind, badge, actions);
  return item;
}

function button(text, label, onClick, className = "") {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.className = className;
  element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}

function markSelected() {
  for (const item of $("jobs-list").children) {
    item.classList.toggle("selected", item.dataset.id === state.job?.id);
  }
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  try {
    const page = await api.listJobs({ limit: state.listed, offset: 0 });
    $("jobs-list").replaceChildren(...page.items.map(jobRow));
    $("jobs-empty").hidden = page.items.length > 0;
    $("jobs-more").hidden = page.items.length >= page.total || state.listed >= MAX_LISTED;
    showError($("jobs-error"), null);
    markSelected();
    if (page.items.some((job) => !api.TERMINAL.has(job.status))) {
      pollTimer = setTimeout(refreshJobs, POLL_MS);
    }
  } catch (error) {
    showError($("jobs-error"), error);
  }
}

// ---- Start ---------------------------------------------------------------------------------

function setUpApiKey() {
  const input = $("api-key");
  input.value = api.getApiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setApiKey(input.value);
    refreshJobs();
    if (state.job) api.getJob(state.job.id).then(openJob).catch(jobError);
  });
}

showKinds();
setUpDrop();
setUpApiKey();
downloadOnClick($("job-weights"), jobError);
copyCurlOnClick($("job-curl"), () => state.job, jobError);
$("fit-form").addEventListener("submit", submitFit);
setUpOptions().catch((error) => showError($("form-error"), error));
for (const event of ["input", "change"]) $("fit-form").addEventListener(event, showEstimate);
showEstimate();
$("job-cancel").addEventListener("click", () => cancel(state.job.id).catch(jobError));
$("job-delete").addEventListener("click", () => remove(state.job.id).catch(jobError));
$("jobs-refresh").addEventListener("click", refreshJobs);
$("jobs-more").addEventListener("click", () => {
  state.listed = Math.min(state.listed + PAGE_SIZE, MAX_LISTED);
  refreshJobs();
});
window.addEventListener("resize", () => state.job && drawCharts());
refreshJobs();
const linked = new URLSearchParams(location.hash.slice(1)).get("job");
if (linked) api.getJob(linked).then(openJob).catch((error) => showError($("jobs-error"), error));

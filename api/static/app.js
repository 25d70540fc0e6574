// The page: upload and start a fit, follow its training live, explore the result, manage jobs.
import * as api from "./api.js";
import { mountAudioView } from "./audio-view.js";
import { drawChart } from "./chart.js";
import { mountImageView } from "./image-view.js";

const $ = (id) => document.getElementById(id);

// How to show and plot the progress `metric`, by its `metric_name` (model/signals/*).
const METRICS = {
  psnr: { label: "PSNR (dB)", log: false, format: (v) => `PSNR ${v.toFixed(2)} dB` },
  mse: { label: "MSE (log scale)", log: true, format: (v) => `MSE ${v.toExponential(2)}` },
  sdf_l1: { label: "SDF L1 error (log scale)", log: true, format: (v) => `SDF L1 ${v.toExponential(2)}` },
};
const metricOf = (name) => METRICS[name]
  || { label: name || "metric", log: false, format: (v) => `${name} ${v.toPrecision(4)}` };
const STAGES = { pretrain: "pretraining the manager", experts: "training experts only" };
const POLL_MS = 4000; // job list refresh while some job is queued or running
const PAGE_SIZE = 20;
const MAX_LISTED = 100; // the API's largest page (GET /v1/jobs?limit=)

// job id -> object URL of the upload: the file this browser sent, or else fetched from the API
const originals = new Map();

/** The upload's object URL (a promise), fetched from `/input` once when this tab did not send it. */
function originalUrl(job) {
  if (!originals.has(job.id)) {
    const fetched = api.getBlob(job.urls.input).then((blob) => URL.createObjectURL(blob));
    fetched.catch(() => originals.delete(job.id)); // the next view of the job asks again
    originals.set(job.id, fetched);
  }
  return Promise.resolve(originals.get(job.id));
}

const state = {
  job: null, points: [], metricName: "", stopFollowing: null, unmountView: null, listed: PAGE_SIZE,
};

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

function fitForm() {
  const form = new FormData();
  const file = $("file").files[0];
  form.append("file", file);
  for (const name of ["preset", "model", "activation"]) form.append(name, $(name).value);
  for (const name of ["steps", "experts"]) {
    if ($(name).value) form.append(name, $(name).value);
  }
  if ($("protocol").checked) form.append("protocol", "paper");
  return { form, file };
}

async function submitFit(event) {
  event.preventDefault();
  const errors = $("form-error");
  if (!$("file").files.length) {
    showError(errors, new Error("Choose a file to fit first."));
    return;
  }
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const { form, file } = fitForm();
    const job = await api.createJob(form);
    originals.set(job.id, URL.createObjectURL(file));
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
  const parts = [job.kind, options.model, options.preset && `preset ${options.preset}`,
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
  $("job-progress").max = total || 1;
  $("job-progress").value = step || 0;
  $("job-step").textContent = [
    `step ${step} / ${total}`,
    STAGES[stage],
    eta > 0 ? `ETA ${formatEta(eta)}` : "",
    Number.isFinite(loss) ? `loss ${loss.toExponential(2)}` : "",
    Number.isFinite(metric) ? metricOf(metricName).format(metric) : "",
  ].filter(Boolean).join(" · ");
  const last = state.points[state.points.length - 1];
  if (stage !== "pretrain" && (!last || step > last.step)) {
    state.points.push({ step, loss, metric });
    drawCharts();
  }
}

function drawCharts() {
  const metric = metricOf(state.metricName);
  $("chart-metric-caption").textContent = metric.label;
  drawChart($("chart-loss"), state.points.map((p) => ({ step: p.step, value: p.loss })), { log: true });
  drawChart($("chart-metric"), state.points.map((p) => ({ step: p.step, value: p.metric })),
    { log: metric.log, color: "#d62728" });
}

function showMetrics(metrics) {
  const list = $("job-metrics");
  list.replaceChildren(...Object.entries(metrics || {}).flatMap(([name, value]) => {
    const term = document.createElement("dt");
    term.textContent = name;
    const definition = document.createElement("dd");
    definition.textContent = typeof value === "number" ? value.toPrecision(5) : String(value);
    return [term, definition];
  }));
}

function showResult(job) {
  state.unmountView?.();
  state.unmountView = null;
  const result = $("result");
  result.replaceChildren();
  if (job.status !== "succeeded") return;
  const template = document.getElementById(`view-${job.kind}`);
  if (!template) return;
  result.append(template.content.cloneNode(true));
  if (job.kind === "image") state.unmountView = mountImageView(result, job, originalUrl(job), jobError);
  if (job.kind === "audio") state.unmountView = mountAudioView(result, job, originalUrl(job), jobError);
  if (job.kind === "sdf") {
    // three.js is large: load it only when a 3D result is shown.
    import("./mesh-view.js")
      .then(({ mountMeshView }) => {
        if (state.job?.id === job.id) state.unmountView = mountMeshView(result, job, jobError);
      })
      .catch(jobError);
  }
}

function showStatus(job) {
  const active = !api.TERMINAL.has(job.status);
  $("job-status").textContent = active && job.cancel_requested ? "canceling" : job.status;
  $("job-status").dataset.status = job.status;
  $("job-cancel").hidden = !active;
  $("job-weights").hidden = job.status !== "succeeded";
  $("job-weights").href = api.jobUrl(job.id, "weights");
  $("job-weights").download = `${api.fileStem(job)}-weights.zip`;
  $("training").hidden = !active && state.points.length === 0;
  jobError(job.status === "failed" && job.error
    ? new api.ApiError(job.error.title, job.error.detail) : null);
  showMetrics(job.metrics);
}

/** Show `job` in the job panel; follows its events until it ends. */
function openJob(job) {
  state.stopFollowing?.();
  state.stopFollowing = null;
  state.job = job;
  state.points = [];
  state.metricName = "";
  history.replaceState(null, "", `#job=${job.id}`);
  $("job").hidden = false;
  $("job-title").textContent = job.filename || `Job ${job.id.slice(0, 8)}`;
  $("job-meta").textContent = describe(job);
  $("job-step").textContent = "";
  $("job-progress").value = 0;
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
  showStatus(job);
  if (api.TERMINAL.has(job.status)) {
    showResult(job);
    refreshJobs();
  }
}

function closeJob() {
  state.stopFollowing?.();
  state.unmountView?.();
  Object.assign(state, { job: null, points: [], stopFollowing: null, unmountView: null });
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
  if (originals.has(id)) Promise.resolve(originals.get(id)).then(URL.revokeObjectURL, () => {});
  originals.delete(id);
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
  kind.textContent = job.kind;
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
    api.fetchOnClick(weights, listError);
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

setUpDrop();
setUpApiKey();
api.fetchOnClick($("job-weights"), jobError);
$("fit-form").addEventListener("submit", submitFit);
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

// The HTTP API as small functions. Every error becomes an ApiError with a readable message,
// built from the service's problem+json body (RFC 9457) when there is one.

export class ApiError extends Error {
  constructor(title, detail = "") {
    super(detail && detail !== title ? `${title}: ${detail}` : title);
    this.title = title;
    this.detail = detail;
  }
}

async function problem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy error page, an empty body): fall back to the status line.
  }
  const title = body?.title || response.statusText || `HTTP ${response.status}`;
  const detail = typeof body?.detail === "string" ? body.detail : "";
  return new ApiError(title, detail);
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError("Cannot reach the service. Check your connection and try again.");
  }
  if (!response.ok) throw await problem(response);
  return response;
}

async function json(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

export const jobUrl = (id, output = "", params = {}) => {
  const query = new URLSearchParams(params).toString();
  return `/v1/jobs/${encodeURIComponent(id)}${output ? `/${output}` : ""}${query ? `?${query}` : ""}`;
};

export const createJob = (formData) => json("/v1/jobs", { method: "POST", body: formData });
export const getJob = (id) => json(jobUrl(id));
export const listJobs = (params = {}) => json(`/v1/jobs?${new URLSearchParams(params)}`);
export const cancelJob = (id) => json(jobUrl(id, "cancel"), { method: "POST" });
export const deleteJob = (id) => json(jobUrl(id), { method: "DELETE" });
export const getJson = (path) => json(path);

/** An output as a Blob, so a failed render shows the API's message instead of a broken image. */
export const getBlob = async (path) => (await request(path)).blob();

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

/**
 * Follow a job's server-sent events: `onProgress(progress)` for each training report and
 * `onStatus(job)` when the status changes. Returns a function that stops listening.
 */
export function followJob(id, { onProgress, onStatus }) {
  const source = new EventSource(jobUrl(id, "events"));
  const parse = (event) => JSON.parse(event.data);
  source.addEventListener("progress", (event) => onProgress(parse(event)));
  source.addEventListener("status", (event) => {
    const job = parse(event);
    onStatus(job);
    if (TERMINAL.has(job.status)) source.close();
  });
  return () => source.close();
}

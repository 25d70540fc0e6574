// The HTTP API as small functions. Every error becomes an ApiError with a readable message,
// built from the service's problem+json body (RFC 9457) when there is one.
//
// Every request goes through fetch, so each can carry the API key (`Authorization: Bearer`) a
// networked service asks for; EventSource, <img src> and plain download links cannot send it.

export class ApiError extends Error {
  constructor(title, detail = "") {
    super(detail && detail !== title ? `${title}: ${detail}` : title);
    this.title = title;
    this.detail = detail;
  }
}

/** No answer at all: the network or the service is down. */
class Unreachable extends ApiError {}

// The key lives for this browser tab only: it is a secret, so it is not kept across sessions.
const KEY_ITEM = "nexp-api-key";
let apiKey = sessionStorage.getItem(KEY_ITEM) || "";

export const getApiKey = () => apiKey;

export function setApiKey(key) {
  apiKey = key.trim();
  if (apiKey) sessionStorage.setItem(KEY_ITEM, apiKey);
  else sessionStorage.removeItem(KEY_ITEM);
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
  const headers = { ...options.headers };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Unreachable("Cannot reach the service. Check your connection and try again.");
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
/** The fit options a job takes: choices, bounds and help (open, no key needed). */
export const getOptions = () => json("/v1/options");
/** The signal kinds: label, file types, outputs with their options (open, no key needed). */
export const getKinds = () => json("/v1/kinds");
export const getJob = (id) => json(jobUrl(id));
export const listJobs = (params = {}) => json(`/v1/jobs?${new URLSearchParams(params)}`);
export const cancelJob = (id) => json(jobUrl(id, "cancel"), { method: "POST" });
export const deleteJob = (id) => json(jobUrl(id), { method: "DELETE" });
/** An output as a Blob, so a failed render shows the API's message instead of a broken image;
 * `options.signal` aborts it. */
export const getBlob = async (path, options = {}) => (await request(path, options)).blob();

/** A name for files saved from `job`: its upload's name without the extension. */
export const fileStem = (job) => job.filename?.replace(/\.[^.]*$/, "") || job.id;

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const RECONNECT_MS = 2000; // after a dropped event stream (a proxy's idle timeout, a restart)

/** One server-sent event block ("event: x\ndata: {...}") as [name, parsed data], or null. */
function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? [name, JSON.parse(data.join("\n"))] : null; // comments are keep-alives
}

/**
 * Follow a job's server-sent events: `onProgress(progress)` for each training report and
 * `onStatus(job)` on each status change, until a final status; `onError(error)` when the
 * stream cannot be had (the job was deleted, the key is refused). Returns a function that stops.
 */
export function followJob(id, { onProgress, onStatus, onError }) {
  const controller = new AbortController();
  let finished = false;

  async function stream() {
    const response = await request(jobUrl(id, "events"), {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event?.[0] === "progress") onProgress(event[1]);
        if (event?.[0] === "status") {
          onStatus(event[1]);
          finished = TERMINAL.has(event[1].status);
        }
      }
    }
  }

  (async () => {
    while (!finished && !controller.signal.aborted) {
      try {
        await stream();
      } catch (error) {
        if (controller.signal.aborted) return;
        // An error answer ends the following; a dropped or refused connection is retried.
        if (error instanceof ApiError && !(error instanceof Unreachable)) return onError(error);
      }
      if (!finished) await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  })();
  return () => controller.abort();
}

// A job's outputs, fetched once per tab: a succeeded job's renders never change, so a URL asked
// for again (zoom switched back, the same file downloaded) is answered from memory. A request
// nobody waits for any longer is aborted, and the server stops rendering once its client goes.
import { getBlob } from "./api.js";

const KEPT = 24; // finished outputs kept, least recently used dropped first (zooms are MBs)
const finished = new Map(); // url -> Blob, oldest use first
const pending = new Map(); // url -> { blob: Promise<Blob>, controller, waiting }

function remember(url, blob) {
  finished.delete(url);
  finished.set(url, blob);
  while (finished.size > KEPT) finished.delete(finished.keys().next().value);
}

function start(url) {
  const controller = new AbortController();
  const entry = { controller, waiting: 0, blob: getBlob(url, { signal: controller.signal }) };
  entry.blob.then((blob) => remember(url, blob), () => {}).finally(() => {
    if (pending.get(url) === entry) pending.delete(url);
  });
  pending.set(url, entry);
  return entry;
}

/**
 * The output at `url` as a Blob. Callers asking for the same URL share one request; `signal`
 * withdraws this caller, and the request is aborted when no caller is left.
 */
export function fetchOutput(url, signal) {
  if (finished.has(url)) {
    const blob = finished.get(url);
    remember(url, blob);
    return Promise.resolve(blob);
  }
  if (signal?.aborted) return Promise.reject(signal.reason);
  const entry = pending.get(url) || start(url);
  entry.waiting += 1;
  return new Promise((resolve, reject) => {
    const withdraw = () => {
      entry.waiting -= 1;
      if (entry.waiting === 0) {
        pending.delete(url); // a later caller starts afresh rather than joining an aborted one
        entry.controller.abort();
      }
      reject(signal.reason);
    };
    signal?.addEventListener("abort", withdraw, { once: true });
    entry.blob.then(resolve, reject).finally(() => signal?.removeEventListener("abort", withdraw));
  });
}

/** Forget a deleted job's outputs. */
export function forgetJob(jobUrl) {
  for (const url of finished.keys()) if (url.startsWith(`${jobUrl}/`)) finished.delete(url);
}

/** Save `blob` as a file named `filename`, through the browser's downloads. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // the download has started by then
}

/**
 * Make a download link save its file through fetch (which carries the API key, a plain link
 * cannot) from the cache; `blob` replaces fetching `link.href` (an output drawn by the page).
 */
export function downloadOnClick(link, onError, blob = () => fetchOutput(link.getAttribute("href"))) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    blob().then((data) => saveBlob(data, link.download)).catch(onError);
  });
}

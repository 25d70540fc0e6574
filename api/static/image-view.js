// Image results, side by side at the signal's own shape: the original, the clean reconstruction,
// the expert map with each expert's share, and the error. Zoom asks the network for a larger
// render (super-resolution); every panel zooms and pans together.
import { fileStem, jobUrl } from "./api.js";
import { apiColorLookup, expertRgb } from "./colors.js";
import { fillLegend } from "./legend.js";
import { downloadOnClick, fetchOutput } from "./outputs.js";

// Heat map colours from no error (black) to the largest error (pale yellow), inferno-like.
const HEAT = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

function heat(t) {
  const scaled = Math.min(Math.max(t, 0), 1) * (HEAT.length - 1);
  const i = Math.min(Math.floor(scaled), HEAT.length - 2);
  const f = scaled - i;
  return HEAT[i].map((c, k) => Math.round(c + f * (HEAT[i + 1][k] - c)));
}

const ZOOMS = [1, 2, 4, 8];
// Past this many pixels a render takes long enough on a CPU (~100k pixels/s per core, see the
// README) that the page asks before starting one.
const LARGE_RENDER_PIXELS = 2_000_000;

function pixels(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

/** Mean absolute RGB error per pixel, at the reconstruction's native size; returns the max. */
function drawErrorMap(canvas, original, reconstruction) {
  const { naturalWidth: width, naturalHeight: height } = reconstruction;
  const a = pixels(original, width, height);
  const b = pixels(reconstruction, width, height);
  const errors = new Float32Array(width * height);
  let max = 1 / 255;
  for (let p = 0; p < errors.length; p++) {
    const o = p * 4;
    const e = (Math.abs(a[o] - b[o]) + Math.abs(a[o + 1] - b[o + 1]) + Math.abs(a[o + 2] - b[o + 2])) / (3 * 255);
    errors[p] = e;
    max = Math.max(max, e);
  }
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  errors.forEach((e, p) => out.data.set([...heat(e / max), 255], p * 4));
  ctx.putImageData(out, 0, 0);
  return max;
}

const fromApiColor = apiColorLookup();

/**
 * Draw the API's expert map `bitmap` on `canvas`; returns the expert id of each pixel (-1, and
 * transparent, where a colour is no expert's) and the pixel count of each expert.
 */
function drawExpertMap(canvas, bitmap) {
  const { width, height } = bitmap;
  const source = pixels(bitmap, width, height);
  const ids = new Int8Array(width * height);
  const counts = [];
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  for (let p = 0; p < ids.length; p++) {
    const o = p * 4;
    const id = fromApiColor(source[o], source[o + 1], source[o + 2]);
    ids[p] = id;
    if (id < 0) continue; // left transparent: the checkerboard shows through
    counts[id] = (counts[id] || 0) + 1;
    out.data.set([...expertRgb(id), 255], o);
  }
  ctx.putImageData(out, 0, 0);
  return { ids, counts };
}

async function decodedUrl(blob) {
  const url = URL.createObjectURL(blob);
  const probe = new Image();
  probe.src = url;
  await probe.decode();
  return url;
}

function loaded(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`${img.alt} could not be decoded`));
    img.src = url;
  });
}

/** Zoomed panels scroll together; a mouse drags them (touch scrolls them natively). */
function linkPanning(stages) {
  stages.forEach((stage) => {
    stage.addEventListener("scroll", () => {
      for (const other of stages) {
        if (other === stage) continue;
        other.scrollLeft = stage.scrollLeft;
        other.scrollTop = stage.scrollTop;
      }
    });
    stage.addEventListener("pointerdown", (event) => {
      if (event.pointerType !== "mouse" || event.button !== 0) return;
      stage.setPointerCapture(event.pointerId);
      stage.classList.add("dragging");
    });
    stage.addEventListener("pointermove", (event) => {
      if (!stage.hasPointerCapture(event.pointerId)) return;
      stage.scrollLeft -= event.movementX;
      stage.scrollTop -= event.movementY;
    });
    const release = () => stage.classList.remove("dragging");
    stage.addEventListener("pointerup", release);
    stage.addEventListener("lostpointercapture", release);
  });
}

/** The point each panel is centred on, as a fraction of its content, and a way to return there. */
function viewCentre(stage) {
  const x = (stage.scrollLeft + stage.clientWidth / 2) / stage.scrollWidth;
  const y = (stage.scrollTop + stage.clientHeight / 2) / stage.scrollHeight;
  return () => {
    stage.scrollLeft = x * stage.scrollWidth - stage.clientWidth / 2;
    stage.scrollTop = y * stage.scrollHeight - stage.clientHeight / 2;
  };
}

/** The before/after panel: the original left of the divider, the reconstruction right of it. */
function linkCompareSlider(slider, compare) {
  const split = () => {
    compare.style.setProperty("--split", `${slider.value}%`);
    slider.setAttribute("aria-valuetext", `${slider.value}% original`);
  };
  slider.addEventListener("input", split);
  split();
}

// The view's markup: app.js puts it in the result panel, then calls `mount`.
export const markup = `<div class="view-root">
  <div class="controls">
    <div class="field">
      <label for="zoom">Zoom</label>
      <select id="zoom" aria-describedby="zoom-hint"></select>
      <span class="hint" id="zoom-hint">Asks the network for a larger render (super-resolution) of every panel.</span>
    </div>
  </div>
  <p class="hint" id="zoom-status" aria-live="polite"></p>
  <div class="images">
    <figure>
      <div class="stage"><img id="original" alt="Original upload"></div>
      <figcaption>Original <span id="original-size"></span></figcaption>
    </figure>
    <figure>
      <div class="stage rendered"><img id="reconstruction" alt="Reconstruction"></div>
      <figcaption>Reconstruction <span id="reconstruction-size"></span></figcaption>
    </figure>
    <figure>
      <div class="stage rendered compare" id="compare">
        <img id="compare-original" alt="">
        <img id="compare-reconstruction" alt="">
      </div>
      <figcaption class="compare-caption">
        <label for="compare-split">Before / after</label>
        <input type="range" id="compare-split" min="0" max="100" value="50"
               aria-valuetext="50% original" aria-describedby="compare-hint">
        <span class="hint" id="compare-hint">Original on the left of the divider, reconstruction on its right.</span>
      </figcaption>
    </figure>
    <figure>
      <div class="stage rendered">
        <canvas id="expert-map" role="img" aria-label="Expert map: which expert draws each pixel; shares in the legend below"></canvas>
      </div>
      <figcaption>Expert map <span id="expert-map-size"></span> <span id="expert-at"></span></figcaption>
      <ul class="legend" id="expert-legend" aria-label="Share of the image each expert draws"></ul>
    </figure>
    <figure>
      <div class="stage"><canvas id="error-map" role="img" aria-label="Error heat map: black where the reconstruction matches, yellow where it is furthest off"></canvas></div>
      <figcaption>Absolute error <span id="error-scale"></span></figcaption>
    </figure>
  </div>
  <p class="actions">Download, at the size shown:
    <a class="button" id="download-reconstruction" download>Reconstruction PNG</a>
    <a class="button" id="download-expert-map" download>Expert map PNG</a>
  </p>
</div>`;

/**
 * Bring the view in `root` to life for a succeeded image `job`; `original()` is a promise of the
 * upload ({ blob, url }). Returns what to run when the view goes.
 */
export function mount(root, job, { original: fetchOriginal, showError }) {
  const original = fetchOriginal(); // fetched while the renders run
  const $ = (id) => root.querySelector(`#${id}`);
  const images = root.querySelector(".images");
  const stages = [...root.querySelectorAll(".stage")];
  const zoomSelect = $("zoom");
  const objectUrls = new Map(); // output URL -> object URL of its blob, for switching back
  let native = null; // { width, height } of the fitted signal, from the 1x render
  let shownZoom = 1;
  let expertIds = null;
  let request = new AbortController(); // the render in flight: a newer zoom or closing aborts it

  const sizeAt = (zoom) => ({ width: native.width * zoom, height: native.height * zoom });
  // 1x asks with no size: the same URL as the API's default render, cached once.
  const outputUrl = (output, zoom) => jobUrl(job.id, output, zoom === 1 ? {} : sizeAt(zoom));

  async function objectUrl(url, signal) {
    if (!objectUrls.has(url)) objectUrls.set(url, await decodedUrl(await fetchOutput(url, signal)));
    return objectUrls.get(url);
  }

  function setBusy(text) {
    images.setAttribute("aria-busy", String(Boolean(text)));
    $("zoom-status").textContent = text;
  }

  /** Render the reconstruction and the expert map at `zoom`, then show them together. */
  async function show(zoom, signal) {
    const label = native ? `${sizeAt(zoom).width} × ${sizeAt(zoom).height} px` : "full size";
    setBusy(`Rendering the reconstruction and the expert map at ${zoom}× (${label})…`);
    const reconUrl = outputUrl("reconstruction", zoom);
    const [recon, map] = await Promise.all([
      objectUrl(reconUrl, signal),
      fetchOutput(outputUrl("experts", zoom), signal).then((blob) => createImageBitmap(blob)),
    ]);
    const keepCentre = stages.map(viewCentre);
    const img = await loaded($("reconstruction"), recon);
    $("compare-reconstruction").src = recon;
    const drawn = drawExpertMap($("expert-map"), map);
    expertIds = drawn.ids;
    fillLegend($("expert-legend"), drawn.counts);
    images.style.setProperty("--zoom", zoom);
    images.classList.toggle("zoomed", zoom > 1);
    keepCentre.forEach((restore) => restore());
    shownZoom = zoom;
    const size = `${img.naturalWidth} × ${img.naturalHeight} px`;
    const pan = zoom > 1 ? `, ${zoom}×; drag to pan` : "";
    $("reconstruction-size").textContent = `(${size}${pan})`;
    $("expert-map-size").textContent = `(${size})`;
    offerDownloads(reconUrl, img);
    setBusy("");
    return img;
  }

  function offerDownloads(reconUrl, img) {
    const size = `${img.naturalWidth}x${img.naturalHeight}`;
    Object.assign($("download-reconstruction"), {
      href: reconUrl, download: `${fileStem(job)}-reconstruction-${size}.png`,
    });
    Object.assign($("download-expert-map"), {
      href: outputUrl("experts", shownZoom), download: `${fileStem(job)}-experts-${size}.png`,
    });
  }

  function fillZoomOptions() {
    zoomSelect.replaceChildren(...ZOOMS.map((zoom) => {
      const { width, height } = sizeAt(zoom);
      const large = width * height > LARGE_RENDER_PIXELS ? " (large: slow)" : "";
      return new Option(`${zoom}× (${width} × ${height})${large}`, zoom, zoom === 1, zoom === 1);
    }));
    zoomSelect.disabled = false;
  }

  async function start() {
    const img = await show(1, request.signal);
    native = { width: img.naturalWidth, height: img.naturalHeight };
    images.style.setProperty("--aspect", `${native.width} / ${native.height}`);
    fillZoomOptions();
    const upload = await loaded($("original"), (await original).url);
    $("compare-original").src = upload.src;
    $("original-size").textContent = `(${upload.naturalWidth} × ${upload.naturalHeight} px)`;
    const max = drawErrorMap($("error-map"), upload, img);
    $("error-scale").textContent = `(black 0 → yellow ${max.toFixed(3)})`;
  }

  zoomSelect.addEventListener("change", () => {
    const zoom = Number(zoomSelect.value);
    const { width, height } = sizeAt(zoom);
    if (width * height > LARGE_RENDER_PIXELS && !window.confirm(
      `A ${width} × ${height} render is ${(width * height / 1e6).toFixed(1)} megapixels: it may take `
      + "minutes, and the service may refuse it. Render it anyway?")) {
      zoomSelect.value = String(shownZoom);
      return;
    }
    request.abort();
    request = new AbortController();
    show(zoom, request.signal).catch((error) => {
      if (error.name === "AbortError") return; // superseded by another zoom
      setBusy("");
      zoomSelect.value = String(shownZoom);
      showError(error);
    });
  });

  $("expert-map").addEventListener("pointermove", (event) => {
    const canvas = event.currentTarget;
    if (!expertIds) return;
    const x = Math.floor((event.offsetX / canvas.clientWidth) * canvas.width);
    const y = Math.floor((event.offsetY / canvas.clientHeight) * canvas.height);
    const id = expertIds[y * canvas.width + x];
    $("expert-at").textContent = id >= 0 ? `pointer on expert ${id}` : "";
  });
  $("expert-map").addEventListener("pointerleave", () => { $("expert-at").textContent = ""; });

  downloadOnClick($("download-reconstruction"), showError);
  downloadOnClick($("download-expert-map"), showError,
    () => new Promise((resolve) => $("expert-map").toBlob(resolve, "image/png")));
  linkPanning(stages);
  linkCompareSlider($("compare-split"), $("compare"));
  zoomSelect.disabled = true; // until the 1x render gives the sizes each zoom asks for

  start().catch((error) => {
    if (error.name !== "AbortError") showError(error);
  });
  return () => {
    request.abort();
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
  };
}

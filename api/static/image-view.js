// Image results: original and reconstruction side by side, a zoom that asks the network for a
// larger render (super-resolution), the expert map as an overlay, and an error heat map.
import { getBlob, jobUrl } from "./api.js";

// Heat map colours from no error (black) to the largest error (pale yellow), inferno-like.
const HEAT = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

function heat(t) {
  const scaled = Math.min(Math.max(t, 0), 1) * (HEAT.length - 1);
  const i = Math.min(Math.floor(scaled), HEAT.length - 2);
  const f = scaled - i;
  return HEAT[i].map((c, k) => Math.round(c + f * (HEAT[i + 1][k] - c)));
}

function pixels(img, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0, width, height);
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
  errors.forEach((e, p) => {
    out.data.set([...heat(e / max), 255], p * 4);
  });
  ctx.putImageData(out, 0, 0);
  return max;
}

function loaded(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`${img.alt} could not be decoded`));
    img.src = url;
  });
}

/**
 * Fill the cloned `view-image` template in `root` for a succeeded image `job`. `originalUrl` is
 * a promise of the upload's object URL.
 */
export function mountImageView(root, job, originalUrl, showError) {
  const $ = (id) => root.querySelector(`#${id}`);
  const stages = [...root.querySelectorAll(".stage")];
  const urls = new Set();
  let native = null; // { width, height } of the fitted signal, from the 1x render

  async function render(id, output, size) {
    const url = URL.createObjectURL(await getBlob(jobUrl(job.id, output, size)));
    urls.add(url);
    return loaded($(id), url);
  }

  async function showZoom(zoom) {
    const size = { width: native.width * zoom, height: native.height * zoom };
    root.querySelector(".images").style.setProperty("--zoom", zoom);
    const [recon] = await Promise.all([
      render("reconstruction", "reconstruction", size),
      render("experts-overlay", "experts", size),
    ]);
    const pan = zoom > 1 ? "; scroll to pan" : "";
    $("reconstruction-size").textContent = `(${recon.naturalWidth} × ${recon.naturalHeight} px${pan})`;
  }

  async function start() {
    const recon = await render("reconstruction", "reconstruction", {});
    native = { width: recon.naturalWidth, height: recon.naturalHeight };
    $("reconstruction-size").textContent = `(${native.width} × ${native.height} px)`;
    await render("experts-overlay", "experts", native);
    const original = await loaded($("original"), await originalUrl);
    $("original-size").textContent = `(${original.naturalWidth} × ${original.naturalHeight} px)`;
    const max = drawErrorMap($("error-map"), original, recon);
    $("error-scale").textContent = `(black 0 → yellow ${max.toFixed(3)})`;
  }

  $("zoom").addEventListener("change", (event) => {
    if (native) showZoom(Number(event.target.value)).catch(showError);
  });
  const opacity = $("overlay-opacity");
  const setOpacity = () => $("experts-overlay").style.setProperty("opacity", opacity.value / 100);
  opacity.addEventListener("input", setOpacity);
  setOpacity();

  // Zoomed images scroll together, so the same spot stays side by side.
  stages.forEach((stage) => stage.addEventListener("scroll", () => {
    for (const other of stages) {
      if (other === stage) continue;
      other.scrollLeft = stage.scrollLeft;
      other.scrollTop = stage.scrollTop;
    }
  }));

  start().catch(showError);
  return () => urls.forEach((url) => URL.revokeObjectURL(url));
}

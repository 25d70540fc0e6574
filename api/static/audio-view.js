// Audio results: waveforms of the original and the reconstruction over the expert segments,
// and players for both.
import { getBlob, getJson, jobUrl } from "./api.js";
import { expertColor } from "./colors.js";

async function decode(blob) {
  // Any rate works for drawing: the waveform is plotted against time, not samples.
  const context = new OfflineAudioContext(1, 1, 44100);
  return context.decodeAudioData(await blob.arrayBuffer());
}

/** Min/max envelope per pixel column over coloured expert segments. */
function drawWave(canvas, audio, segments) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);

  const duration = audio.duration;
  for (const { start_s: start, end_s: end, expert } of segments) {
    ctx.fillStyle = expertColor(expert, 0.35);
    ctx.fillRect((start / duration) * width, 0, ((end - start) / duration) * width, height);
  }

  const samples = audio.getChannelData(0);
  const perColumn = samples.length / width;
  ctx.strokeStyle = getComputedStyle(canvas).color;
  ctx.beginPath();
  for (let x = 0; x < width; x++) {
    let [lo, hi] = [1, -1];
    const end = Math.min(samples.length, Math.ceil((x + 1) * perColumn));
    for (let i = Math.floor(x * perColumn); i < end; i++) {
      lo = Math.min(lo, samples[i]);
      hi = Math.max(hi, samples[i]);
    }
    if (lo > hi) continue; // fewer samples than columns: this column has none
    ctx.moveTo(x + 0.5, ((1 - hi) / 2) * height);
    ctx.lineTo(x + 0.5, ((1 - lo) / 2) * height + 1);
  }
  ctx.stroke();
}

function fillLegend(list, segments) {
  const experts = [...new Set(segments.map((s) => s.expert))].sort((a, b) => a - b);
  list.replaceChildren(...experts.map((expert) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = expertColor(expert);
    item.append(swatch, `expert ${expert}`);
    return item;
  }));
}

/**
 * Fill the cloned `view-audio` template in `root` for a succeeded audio `job`; `originalUrl`
 * is a promise of the upload's object URL.
 */
export function mountAudioView(root, job, originalUrl, showError) {
  const $ = (id) => root.querySelector(`#${id}`);
  let reconUrl = null;

  async function start() {
    const [wav, experts] = await Promise.all([
      getBlob(jobUrl(job.id, "reconstruction")),
      getJson(jobUrl(job.id, "experts")),
    ]);
    reconUrl = URL.createObjectURL(wav);
    $("audio-reconstruction").src = reconUrl;
    fillLegend($("expert-legend"), experts.segments);
    drawWave($("wave-reconstruction"), await decode(wav), experts.segments);
    const url = await originalUrl;
    $("audio-original").src = url;
    const original = await decode(await (await fetch(url)).blob());
    drawWave($("wave-original"), original, experts.segments);
  }

  start().catch(showError);
  return () => reconUrl && URL.revokeObjectURL(reconUrl);
}

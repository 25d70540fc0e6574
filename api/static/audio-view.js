// Audio results: the original's waveform, the reconstruction's over its expert segments with
// each expert's share, players for both, and the outputs to download.
import { fileStem, jobUrl } from "./api.js";
import { expertColor } from "./colors.js";
import { fillLegend } from "./legend.js";
import { downloadOnClick, fetchOutput } from "./outputs.js";

async function decode(blob) {
  // Any rate works for drawing: the waveform is plotted against time, not samples.
  const context = new OfflineAudioContext(1, 1, 44100);
  return context.decodeAudioData(await blob.arrayBuffer());
}

/** Min/max envelope per pixel column, over coloured expert `segments` when given. */
function drawWave(canvas, audio, segments = []) {
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

function countExperts(ids) {
  const counts = [];
  for (const id of ids) counts[id] = (counts[id] || 0) + 1;
  return counts;
}

/**
 * Fill the cloned `view-audio` template in `root` for a succeeded audio `job`; `original` is a
 * promise of the upload ({ blob, url }).
 */
export function mountAudioView(root, job, original, showError) {
  const $ = (id) => root.querySelector(`#${id}`);
  const request = new AbortController(); // closing the job abandons its renders
  const outputs = {
    reconstruction: { url: jobUrl(job.id, "reconstruction"), file: "reconstruction.wav" },
    experts: { url: jobUrl(job.id, "experts"), file: "experts.json" },
    plot: { url: jobUrl(job.id, "experts", { format: "png" }), file: "experts.png" },
  };
  for (const [name, { url, file }] of Object.entries(outputs)) {
    const link = $(`download-${name}`);
    Object.assign(link, { href: url, download: `${fileStem(job)}-${file}` });
    downloadOnClick(link, showError);
  }
  let reconUrl = null;

  async function start() {
    const [wav, experts] = await Promise.all([
      fetchOutput(outputs.reconstruction.url, request.signal),
      fetchOutput(outputs.experts.url, request.signal).then(async (blob) => JSON.parse(await blob.text())),
    ]);
    reconUrl = URL.createObjectURL(wav);
    $("audio-reconstruction").src = reconUrl;
    fillLegend($("expert-legend"), countExperts(experts.expert_ids));
    drawWave($("wave-reconstruction"), await decode(wav), experts.segments);
    const { blob, url } = await original;
    $("audio-original").src = url;
    drawWave($("wave-original"), await decode(blob));
  }

  start().catch((error) => {
    if (error.name !== "AbortError") showError(error);
  });
  return () => {
    request.abort();
    if (reconUrl) URL.revokeObjectURL(reconUrl);
  };
}

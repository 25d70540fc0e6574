// Audio results: the original's waveform and the reconstruction's, the latter in the colour of
// the expert that plays most of each instant, with one lane per expert under it (experts that
// play under 1% share an "other" lane), a time axis, players with playheads, and downloads.
import { fileStem, jobUrl } from "./api.js";
import { expertColor } from "./colors.js";
import { fillLegend } from "./legend.js";
import { downloadOnClick, fetchOutput } from "./outputs.js";

const WAVE_HEIGHT = 120;
const LANE_HEIGHT = 18;
const AXIS_HEIGHT = 22;
const OTHER = -1; // the lane of the experts folded into "other"

async function decode(blob) {
  // Any rate works for drawing: the waveform is plotted against time, not samples.
  const context = new OfflineAudioContext(1, 1, 44100);
  return context.decodeAudioData(await blob.arrayBuffer());
}

/** A crisp 2D context over `canvas` at its CSS width and `height` CSS pixels. */
function canvasContext(canvas, height) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width, height };
}

/** Min/max envelope per pixel column; `columnColor(x)` colours a column (default: the text's). */
function drawWave(canvas, audio, columnColor = null) {
  const { ctx, width, height } = canvasContext(canvas, WAVE_HEIGHT);
  const samples = audio.getChannelData(0);
  const perColumn = samples.length / width;
  const plain = getComputedStyle(canvas).color;
  let peak = 0;
  for (let x = 0; x < width; x++) {
    let [lo, hi] = [1, -1];
    const end = Math.min(samples.length, Math.ceil((x + 1) * perColumn));
    for (let i = Math.floor(x * perColumn); i < end; i++) {
      lo = Math.min(lo, samples[i]);
      hi = Math.max(hi, samples[i]);
    }
    if (lo > hi) continue; // fewer samples than columns: this column has none
    peak = Math.max(peak, hi, -lo);
    ctx.strokeStyle = columnColor?.(x) || plain;
    ctx.beginPath();
    ctx.moveTo(x + 0.5, ((1 - hi) / 2) * height);
    ctx.lineTo(x + 0.5, ((1 - lo) / 2) * height + 1);
    ctx.stroke();
  }
  return peak;
}

/** Samples of each lane per pixel column: lanes[lane][x], a lane per shown expert and "other". */
function laneCounts(ids, width, laneOf, laneCount) {
  const lanes = Array.from({ length: laneCount }, () => new Float32Array(width));
  ids.forEach((id, i) => { lanes[laneOf(id)][Math.floor((i * width) / ids.length)] += 1; });
  return lanes;
}

/** One row per lane, each column as opaque as the share of its samples that lane plays. */
function drawLanes(canvas, lanes, laneExperts) {
  const { ctx, width } = canvasContext(canvas, lanes.length * LANE_HEIGHT);
  const totals = new Float32Array(width);
  lanes.forEach((lane) => lane.forEach((n, x) => { totals[x] += n; }));
  const other = ctx.createPattern(hatch(), "repeat");
  lanes.forEach((lane, row) => {
    const expert = laneExperts[row];
    const y = row * LANE_HEIGHT;
    lane.forEach((n, x) => {
      if (!n) return;
      ctx.globalAlpha = 0.25 + 0.75 * (n / totals[x]); // a lone sample still shows
      ctx.fillStyle = expert === OTHER ? other : expertColor(expert);
      ctx.fillRect(x, y + 1, 1, LANE_HEIGHT - 2);
    });
    ctx.globalAlpha = 1;
    label(ctx, expert === OTHER ? "other" : `expert ${expert}`, y);
  });
}

/** The "other" swatch's hatching, as a canvas pattern tile. */
function hatch() {
  const tile = new OffscreenCanvas(4, 4);
  const ctx = tile.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, 4, 4);
  ctx.strokeStyle = "#777";
  ctx.beginPath();
  ctx.moveTo(0, 4);
  ctx.lineTo(4, 0);
  ctx.stroke();
  return tile;
}

/** A lane's name at its left, on a light box so that it reads over any colour. */
function label(ctx, text, y) {
  ctx.font = "11px system-ui, sans-serif";
  const width = ctx.measureText(text).width + 6;
  ctx.fillStyle = "rgb(255 255 255 / 0.85)";
  ctx.fillRect(2, y + 2, width, LANE_HEIGHT - 4);
  ctx.fillStyle = "#1d2430";
  ctx.textBaseline = "middle";
  ctx.fillText(text, 5, y + LANE_HEIGHT / 2);
}

/** Tick spacing: 1, 2 or 5 times a power of ten, for at most about `most` ticks. */
function tickStep(duration, most) {
  const raw = duration / most;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function drawTimeAxis(canvas, duration) {
  const { ctx, width } = canvasContext(canvas, AXIS_HEIGHT);
  const step = tickStep(duration, Math.max(2, Math.floor(width / 70)));
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  ctx.fillStyle = getComputedStyle(canvas).color;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const x = Math.round((t / duration) * (width - 1));
    ctx.fillRect(x, 0, 1, 5);
    ctx.textAlign = x < 20 ? "left" : x > width - 20 ? "right" : "center";
    ctx.fillText(`${t.toFixed(decimals)} s`, x, 7);
  }
}

/** Keep `playhead` where `player` is while it plays, and where it stopped after. */
function followPlayer(player, playhead) {
  let frame = 0;
  const place = () => {
    playhead.hidden = !(player.duration > 0) || (player.paused && player.currentTime === 0);
    playhead.style.left = `${(100 * player.currentTime) / player.duration}%`;
    if (!player.paused) frame = requestAnimationFrame(place);
  };
  player.addEventListener("play", () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(place);
  });
  for (const event of ["pause", "seeked", "ended"]) player.addEventListener(event, place);
  return () => cancelAnimationFrame(frame);
}

function countExperts(ids) {
  const counts = [];
  for (const id of ids) counts[id] = (counts[id] || 0) + 1;
  return counts;
}

const seconds = (audio) => `${audio.duration.toFixed(2)} s`;
const percent = (share) => `${(share * 100).toFixed(1)}%`;

/** The lanes' text alternative: who plays how much. */
function lanesSummary(shares, audio) {
  const named = shares.slice(0, 6).map(({ expert, share }) => `expert ${expert} ${percent(share)}`);
  return `Expert lanes over ${seconds(audio)}, one per expert: ${named.join(", ")}`
    + (shares.length > 6 ? `, and ${shares.length - 6} more` : "");
}

/** The reconstruction's waveform, lanes and axis, from the per-sample expert ids. */
function drawReconstruction(root, audio, ids, shares) {
  const $ = (id) => root.querySelector(`#${id}`);
  const laneExperts = shares.filter(({ share }) => share >= 0.01).map(({ expert }) => expert);
  if (laneExperts.length < shares.length) laneExperts.push(OTHER);
  const laneIndex = new Map(laneExperts.map((expert, lane) => [expert, lane]));
  const laneOf = (id) => laneIndex.get(id) ?? laneIndex.get(OTHER);
  const width = $("wave-reconstruction").clientWidth;
  const lanes = laneCounts(ids, width, laneOf, laneExperts.length);
  const mostPlayed = (x) => {
    const lane = lanes.reduce((best, counts, i) => (counts[x] > lanes[best][x] ? i : best), 0);
    return laneExperts[lane] === OTHER ? "#777" : expertColor(laneExperts[lane]);
  };
  const peak = drawWave($("wave-reconstruction"), audio, mostPlayed);
  $("wave-reconstruction").setAttribute("aria-label",
    `Reconstructed waveform, ${seconds(audio)}, peak ${peak.toFixed(2)}, coloured by expert`);
  drawLanes($("expert-lanes"), lanes, laneExperts);
  $("expert-lanes").setAttribute("aria-label", lanesSummary(shares, audio));
  drawTimeAxis($("time-axis"), audio.duration);
}

// The view's markup: app.js puts it in the result panel, then calls `mount`.
export const markup = `<div class="view-root">
  <figure class="wave">
    <div class="track">
      <canvas id="wave-original" role="img" aria-label="Original waveform"></canvas>
      <span class="playhead" id="playhead-original" hidden></span>
    </div>
    <figcaption>Original <audio id="audio-original" controls preload="metadata"></audio></figcaption>
  </figure>
  <figure class="wave">
    <div class="track">
      <canvas id="wave-reconstruction" role="img" aria-label="Reconstructed waveform"></canvas>
      <canvas id="expert-lanes" class="lanes" role="img" aria-label="Expert lanes"></canvas>
      <canvas id="time-axis" class="axis" aria-hidden="true"></canvas>
      <span class="playhead" id="playhead-reconstruction" hidden></span>
    </div>
    <figcaption>Reconstruction, each instant in the colour of the expert that plays most of it;
      below, one lane per expert <audio id="audio-reconstruction" controls preload="metadata"></audio></figcaption>
  </figure>
  <ul class="legend" id="expert-legend" aria-label="Share of the clip each expert plays"></ul>
  <p class="actions">Download
    <a class="button" id="download-reconstruction" download>Reconstruction WAV</a>
    <a class="button" id="download-experts" download>Expert ids JSON</a>
    <a class="button" id="download-plot" download>Expert plot PNG</a>
  </p>
</div>`;

/**
 * Bring the view in `root` to life for a succeeded audio `job`; `original()` is a promise of the
 * upload ({ blob, url }). Returns what to run when the view goes.
 */
export function mount(root, job, { original: fetchOriginal, showError }) {
  const original = fetchOriginal(); // fetched while the renders run
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
  const stopFollowing = ["original", "reconstruction"].map(
    (name) => followPlayer($(`audio-${name}`), $(`playhead-${name}`)));
  let reconUrl = null;
  let redraw = () => {}; // once both clips are decoded: draws them at the canvases' width

  // Canvases are drawn at their CSS width: a phone turned, a window resized, draws them again.
  let frame = 0;
  const resized = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => redraw());
  });
  resized.observe($("wave-reconstruction"));

  async function start() {
    const [wav, experts] = await Promise.all([
      fetchOutput(outputs.reconstruction.url, request.signal),
      fetchOutput(outputs.experts.url, request.signal).then(async (blob) => JSON.parse(await blob.text())),
    ]);
    reconUrl = URL.createObjectURL(wav);
    $("audio-reconstruction").src = reconUrl;
    const shares = fillLegend($("expert-legend"), countExperts(experts.expert_ids));
    const reconstruction = await decode(wav);
    const { blob, url } = await original;
    $("audio-original").src = url;
    const audio = await decode(blob);
    redraw = () => {
      drawReconstruction(root, reconstruction, experts.expert_ids, shares);
      const peak = drawWave($("wave-original"), audio);
      $("wave-original").setAttribute("aria-label", `Original waveform, ${seconds(audio)}, peak ${peak.toFixed(2)}`);
    };
    redraw();
  }

  start().catch((error) => {
    if (error.name !== "AbortError") showError(error);
  });
  return () => {
    request.abort();
    resized.disconnect();
    cancelAnimationFrame(frame);
    stopFollowing.forEach((stop) => stop());
    if (reconUrl) URL.revokeObjectURL(reconUrl);
  };
}

// A small line chart on a canvas: training curves need no plotting library.

const PAD = { left: 52, right: 10, top: 10, bottom: 22 };

function format(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e4 || magnitude < 1e-2 ? value.toExponential(1) : value.toPrecision(3);
}

/**
 * Draw `points` ([{step, value}], in step order) as a line. With `log`, values are plotted on a
 * log10 axis (losses span decades); non-positive values are left out there.
 */
export function drawChart(canvas, points, { log = false, color = "#1f77b4" } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const style = getComputedStyle(canvas);
  ctx.font = `11px ${style.fontFamily}`;
  ctx.fillStyle = style.color;
  ctx.strokeStyle = style.color;

  const shown = points.filter((p) => Number.isFinite(p.value) && (!log || p.value > 0));
  if (shown.length === 0) {
    ctx.fillText("waiting for the first report…", PAD.left, height / 2);
    return;
  }
  const ys = shown.map((p) => (log ? Math.log10(p.value) : p.value));
  let [lo, hi] = [Math.min(...ys), Math.max(...ys)];
  if (hi - lo < 1e-9) [lo, hi] = [lo - 0.5, hi + 0.5];
  const firstStep = shown[0].step;
  const lastStep = Math.max(shown[shown.length - 1].step, firstStep + 1);

  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const x = (step) => PAD.left + ((step - firstStep) / (lastStep - firstStep)) * plotW;
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * plotH;

  // Axes with their end values: enough to read a trend and a final number.
  ctx.globalAlpha = 0.4;
  ctx.strokeRect(PAD.left, PAD.top, plotW, plotH);
  ctx.globalAlpha = 1;
  const label = (v) => format(log ? 10 ** v : v);
  ctx.textAlign = "right";
  ctx.fillText(label(hi), PAD.left - 4, PAD.top + 9);
  ctx.fillText(label(lo), PAD.left - 4, PAD.top + plotH);
  ctx.textAlign = "left";
  ctx.fillText(`step ${firstStep}`, PAD.left, height - 6);
  ctx.textAlign = "right";
  ctx.fillText(`${lastStep}`, width - PAD.right, height - 6);

  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  shown.forEach((p, i) => {
    const [px, py] = [x(p.step), y(ys[i])];
    if (i === 0) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  });
  ctx.stroke();
  if (shown.length === 1) {
    ctx.fillStyle = color;
    ctx.fillRect(x(shown[0].step) - 2, y(ys[0]) - 2, 4, 4);
  }
}

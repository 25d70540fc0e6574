// What the numbers mean: each metric's name, unit and which way is better (the model's metric
// keys: model/signals/*.py), and the sentence on a result its kind declares too poor to keep.

// The live progress `metric`, by its `metric_name`.
const PROGRESS = {
  psnr: { label: "PSNR (dB, higher is better)", log: false, format: (v) => `PSNR ${v.toFixed(2)} dB` },
  mse: { label: "MSE (log scale, lower is better)", log: true, format: (v) => `MSE ${v.toExponential(2)}` },
  sdf_l1: { label: "SDF L1 error (log scale, lower is better)", log: true, format: (v) => `SDF L1 ${v.toExponential(2)}` },
};

export const progressMetric = (name) => PROGRESS[name]
  || { label: name || "metric", log: false, format: (v) => `${name} ${v.toPrecision(4)}` };

const HIGHER = "↑ higher is better";
const LOWER = "↓ lower is better";

// The final metrics, by key: a readable name (`short` within a sentence, where it differs), the
// value as shown, and which way is better.
const FINAL = {
  psnr: { name: "PSNR", format: (v) => `${v.toFixed(2)} dB`, better: HIGHER },
  psnr_paper: { name: "PSNR, the paper's convention (peak: max |signal|)", short: "PSNR (paper)", format: (v) => `${v.toFixed(2)} dB`, better: HIGHER },
  ssim: { name: "SSIM (structural similarity, 0 to 1)", short: "SSIM", format: (v) => v.toFixed(4), better: HIGHER },
  mse: { name: "MSE (mean squared error)", short: "MSE", format: (v) => v.toExponential(3), better: LOWER },
  iou: { name: "IoU of the inside (0 to 1)", short: "IoU", format: (v) => v.toFixed(3), better: HIGHER },
  trimap_iou: { name: "Trimap IoU, near the surface (0 to 1)", short: "trimap IoU", format: (v) => v.toFixed(3), better: HIGHER },
  chamfer: { name: "Chamfer distance (×10⁵)", short: "Chamfer distance", format: (v) => v.toPrecision(4), better: LOWER },
};

/** A finite metric's value as shown: its known format, else five significant digits. */
const formatValue = (key, value) => (FINAL[key] ? FINAL[key].format(value) : value.toPrecision(5));

// Why the fit stopped (metrics.json's stop_reason), in words.
const STOP_REASONS = {
  steps: "it ran all its steps",
  budget: "its time budget ran out",
  target: "it reached its target PSNR",
};

/** [{ key, name, value, better }] for each final metric, readable. */
export function describeMetrics(metrics) {
  return Object.entries(metrics || {}).map(([key, value]) => {
    if (key === "stop_reason") {
      return { key, name: "Stopped because", value: STOP_REASONS[value] || String(value), better: "" };
    }
    const known = FINAL[key];
    const shown = typeof value !== "number" ? "not available"
      : !Number.isFinite(value) ? String(value) // chamfer is inf when no surface came out
        : formatValue(key, value);
    return { key, name: known?.name || key, value: shown, better: known?.better || "" };
  });
}

/**
 * A sentence on why `job`'s result is poor, or "" when it is not: by the first of its `kind`'s
 * rules (GET /v1/kinds: `poor_results`) whose metric is under its bound. The job succeeded (it ran
 * to the end), yet the fit failed.
 */
export function poorResult(job, kind) {
  const metrics = job.metrics || {};
  // A metric left out, or null (not available), says nothing: null < 0.5 would be true.
  const rule = kind?.poor_results.find(({ metric, below }) => typeof metrics[metric] === "number"
    && metrics[metric] < below);
  if (!rule) return "";
  const { metric, below, problem, advice } = rule;
  const name = FINAL[metric]?.short || FINAL[metric]?.name || metric;
  return `${problem} (${name} ${formatValue(metric, metrics[metric])}, under ${formatValue(metric, below)}): ${advice}`;
}

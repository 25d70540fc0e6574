// What the numbers mean: each metric's name, unit and which way is better, and the results
// poor enough to say so (the model's metric keys: model/signals/*.py).

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

// The final metrics, by key: a readable name, the value as shown, and which way is better.
const FINAL = {
  psnr: { name: "PSNR", format: (v) => `${v.toFixed(2)} dB`, better: HIGHER },
  psnr_paper: { name: "PSNR, the paper's convention (peak: max |signal|)", format: (v) => `${v.toFixed(2)} dB`, better: HIGHER },
  ssim: { name: "SSIM (structural similarity, 0 to 1)", format: (v) => v.toFixed(4), better: HIGHER },
  mse: { name: "MSE (mean squared error)", format: (v) => v.toExponential(3), better: LOWER },
  iou: { name: "IoU of the inside (0 to 1)", format: (v) => v.toFixed(3), better: HIGHER },
  trimap_iou: { name: "Trimap IoU, near the surface (0 to 1)", format: (v) => v.toFixed(3), better: HIGHER },
  chamfer: { name: "Chamfer distance (×10⁵)", format: (v) => v.toPrecision(4), better: LOWER },
};

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
        : known ? known.format(value) : value.toPrecision(5);
    return { key, name: known?.name || key, value: shown, better: known?.better || "" };
  });
}

// Results below these say the fit failed, though the job succeeded (it ran to the end).
const POOR = [
  {
    kind: "sdf", test: (m) => m.iou < 0.5,
    say: (m) => `The shape was not recovered (IoU ${m.iou.toFixed(2)}, under 0.5): the mesh is `
      + "mostly noise. Try more steps (the fast preset's 300 at least), or the paper preset on a GPU.",
  },
  {
    kind: "image", test: (m) => m.psnr < 20,
    say: (m) => `The reconstruction is far from the image (PSNR ${m.psnr.toFixed(1)} dB, under 20 dB): `
      + "try more steps, or the fast preset's default.",
  },
];

/** A sentence on why `job`'s result is poor, or "" when it is not. */
export function poorResult(job) {
  const metrics = job.metrics || {};
  const rule = POOR.find(({ kind, test }) => kind === job.kind && test(metrics));
  return rule ? rule.say(metrics) : "";
}

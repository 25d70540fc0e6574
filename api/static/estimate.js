// Before a fit starts, how long it will take: a time budget caps it (the one chosen, or the
// service's default when neither steps nor a budget is set); steps alone take their count times a
// step's cost. The API does not say which device its workers have, so costs are a CPU worker's.

// NEXP_DEFAULT_TIME_BUDGET_S's default (service/settings.py): what a fit with no steps gets.
const DEFAULT_BUDGET_S = 300;
// Seconds per step, fast preset, on a 2-core CPU worker (bench/RESULTS.md: 300 steps in ~85 s for
// an image or a clip, ~160 s for a 3D shape, manager pretraining included).
const CPU_STEP_S = { image: 0.29, audio: 0.3, sdf: 0.54 };
// The evaluation renders the whole signal: ~100k pixels a second a core on such a CPU (README).
const EVAL_PER_S = 200_000;

const KIND_BY_TYPE = [[/^image\//, "image"], [/^audio\//, "audio"]];
const KIND_BY_NAME = [[/\.(png|jpe?g|webp)$/i, "image"], [/\.(wav|flac|ogg)$/i, "audio"]];

/** The kind the API will probably detect (it reads the bytes; this reads the name and type). */
export function guessKind(file) {
  const match = (rules, text) => rules.find(([pattern]) => pattern.test(text))?.[1];
  return match(KIND_BY_TYPE, file.type) || match(KIND_BY_NAME, file.name) || "sdf";
}

const sizes = new WeakMap(); // File -> promise of its pixel count (images only)

/** An image's pixel count (null for other kinds, or one the browser cannot decode). */
export function pixelCount(file) {
  if (!sizes.has(file)) {
    const count = guessKind(file) !== "image" ? Promise.resolve(null)
      : createImageBitmap(file).then((bitmap) => bitmap.width * bitmap.height, () => null);
    sizes.set(file, count);
  }
  return sizes.get(file);
}

export function formatDuration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/**
 * One line: the expected run time for `kind` (null before a file is chosen), `pixels` (or null),
 * `steps` ("" for the preset's) and the chosen `budget` in seconds ("" for the default).
 */
export function describeEstimate({ kind, pixels, steps, budget }) {
  const evaluation = pixels ? ` plus ~${formatDuration(pixels / EVAL_PER_S)} to evaluate ${pixels.toLocaleString()} pixels` : " plus its evaluation";
  if (!steps && !budget) {
    return `Estimated run time: up to ${formatDuration(DEFAULT_BUDGET_S)}, the service's default budget `
      + `(unless its operator set another),${evaluation}.`;
  }
  const stepCost = CPU_STEP_S[kind || "image"];
  const bySteps = Number(steps) * stepCost;
  if (budget && (!steps || Number(budget) <= bySteps)) {
    return `Estimated run time: ${formatDuration(Number(budget))}, the budget,${evaluation}.`;
  }
  const count = Number(steps).toLocaleString();
  return `Estimated run time on a CPU worker: ~${formatDuration(bySteps)} (${count} steps at ~${stepCost} s),`
    + `${evaluation}; a GPU worker is several times faster.`;
}

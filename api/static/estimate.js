// Before a fit starts, how long it will take: a time budget caps it (the one chosen, or the
// service's default when neither steps nor a budget is set); steps alone take their count times a
// step's cost. The API does not say which device its workers have, so costs are a CPU worker's:
// each kind declares its own (GET /v1/kinds: `cpu_step_s`, measured as bench/RESULTS.md says).

// NEXP_DEFAULT_TIME_BUDGET_S's default (service/settings.py): what a fit with no steps gets.
const DEFAULT_BUDGET_S = 300;
// The evaluation renders the whole signal: ~100k pixels a second a core on such a CPU (README).
const EVAL_PER_S = 200_000;

/** A file name's extension, lower-case as the kinds declare theirs (".png"); "" when none. */
function suffixOf(name) {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot).toLowerCase();
}

/**
 * The kind (one of GET /v1/kinds) the API will probably detect, by the file's declared media
 * family, else its extension; null when neither says. The API reads the bytes: this is a guess.
 */
export function guessKind(file, kinds) {
  const family = file.type.split("/")[0];
  const suffix = suffixOf(file.name);
  return kinds.find((kind) => family && kind.media_family === family)
    || kinds.find((kind) => kind.suffixes.includes(suffix)) || null;
}

const sizes = new WeakMap(); // File -> promise of its pixel count (images only)

/**
 * An image's pixel count, what its evaluation renders (null for a `kind` of another media family,
 * or a file the browser cannot decode).
 */
export function pixelCount(file, kind) {
  if (!sizes.has(file)) {
    const count = kind?.media_family !== "image" ? Promise.resolve(null)
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
 * One line: the expected run time for the guessed `kind` (null when `chosen` is false, no file yet,
 * or the file's name and type do not say), `pixels` (or null), `steps` ("" for the preset's) and
 * the chosen `budget` in seconds ("" for the default).
 */
export function describeEstimate({ chosen, kind, pixels, steps, budget }) {
  const evaluation = pixels ? ` plus ~${formatDuration(pixels / EVAL_PER_S)} to evaluate ${pixels.toLocaleString()} pixels` : " plus its evaluation";
  if (!steps && !budget) {
    return `Estimated run time: up to ${formatDuration(DEFAULT_BUDGET_S)}, the service's default budget `
      + `(unless its operator set another),${evaluation}.`;
  }
  const byBudget = () => `Estimated run time: ${formatDuration(Number(budget))}, the budget,${evaluation}.`;
  if (!steps) return byBudget();
  const count = Number(steps).toLocaleString();
  if (!kind) return unknownStepCost({ chosen, count, budget, evaluation });
  const bySteps = Number(steps) * kind.cpu_step_s;
  if (budget && Number(budget) <= bySteps) return byBudget();
  return `Estimated run time on a CPU worker: ~${formatDuration(bySteps)} (${count} steps at ~${kind.cpu_step_s} s),`
    + `${evaluation}; a GPU worker is several times faster.`;
}

/** The estimate for `count` steps of a kind not known yet: only a budget bounds it. */
function unknownStepCost({ chosen, count, budget, evaluation }) {
  const why = `a step's cost depends on the kind of signal, and ${chosen
    ? "this file's name and type do not say which it is (the service tells from its content)"
    : "no file is chosen yet"}`;
  if (!budget) return `No run-time estimate for ${count} steps: ${why}.`;
  return `Estimated run time: up to ${formatDuration(Number(budget))}, the budget,${evaluation}; `
    + `${count} steps may take less, but ${why}.`;
}

// The legend under an expert map: each expert's colour, id and share of the signal, largest
// first, with the experts that own almost nothing folded into one "other" line.
import { expertColor } from "./colors.js";

const FOLD_BELOW = 0.01; // under 1%, an expert is a speck on the map and noise in the legend

const percent = (share) => (share < 0.001 ? "<0.1%" : `${(share * 100).toFixed(1)}%`);

function item(color, label, share) {
  const entry = document.createElement("li");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  if (color) swatch.style.background = color;
  else swatch.classList.add("other");
  const name = document.createElement("span");
  name.textContent = label;
  const value = document.createElement("span");
  value.className = "share";
  value.textContent = percent(share);
  entry.append(swatch, name, value);
  return entry;
}

/** Fill `list` from `counts` (pixels, samples or vertices per expert id); returns the shares,
 * largest first, as [{ expert, share }]. */
export function fillLegend(list, counts) {
  const total = counts.reduce((sum, count) => sum + (count || 0), 0) || 1;
  const shares = counts
    .map((count, expert) => ({ expert, share: (count || 0) / total }))
    .filter(({ share }) => share > 0)
    .sort((a, b) => b.share - a.share);
  const shown = shares.filter(({ share }) => share >= FOLD_BELOW);
  const folded = shares.filter(({ share }) => share < FOLD_BELOW);
  const items = shown.map(({ expert, share }) => item(expertColor(expert), `expert ${expert}`, share));
  if (folded.length) {
    const rest = folded.reduce((sum, { share }) => sum + share, 0);
    const noun = folded.length === 1 ? "expert" : "experts";
    items.push(item(null, `other (${folded.length} ${noun})`, rest));
  }
  list.replaceChildren(...items);
  return shares;
}

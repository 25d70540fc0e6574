// Expert colours: model/render.py's palette (Okabe & Ito's eight colours, told apart with any
// colour vision, then the same hues half-way to white), with which the API paints expert maps
// and mesh vertices. The page names experts by these exact colours (tests/web/test_palette.py
// keeps the two lists equal).

/** model/render.py's `_PALETTE`, in its order. */
export const PALETTE = [
  [0, 114, 178], [230, 159, 0], [86, 180, 233], [213, 94, 0],
  [0, 158, 115], [240, 228, 66], [204, 121, 167], [0, 0, 0],
  [128, 184, 216], [242, 207, 128], [170, 218, 244], [234, 174, 128],
  [128, 206, 185], [248, 242, 160], [230, 188, 211], [128, 128, 128],
];

/** The page's colour of expert `id`, as [r, g, b]. */
export const expertRgb = (id) => PALETTE[id % PALETTE.length];

export const expertColor = (id, alpha = 1) => {
  const [r, g, b] = expertRgb(id);
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
};

const packed = (r, g, b) => (r << 16) | (g << 8) | b;

/**
 * A lookup from a colour the API painted to its expert id (-1 for any other colour).
 * `toKey` maps an API colour to the form it is found in (three.js stores mesh colours linear).
 */
export function apiColorLookup(toKey = (rgb) => rgb) {
  const ids = new Map(PALETTE.map((rgb, id) => [packed(...toKey(rgb)), id]));
  return (r, g, b) => ids.get(packed(r, g, b)) ?? -1;
}

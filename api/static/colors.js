// Expert colours, the same palette as model/render.py's `expert_colors` so that audio segments
// drawn here match the expert maps and mesh colours the API renders.
const PALETTE = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
  [141, 211, 199], [255, 255, 179], [190, 186, 218], [251, 128, 114], [128, 177, 211],
  [253, 180, 98],
];

export const expertColor = (id, alpha = 1) => {
  const [r, g, b] = PALETTE[id % PALETTE.length];
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
};

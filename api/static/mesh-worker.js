// Off the main thread: a 128³ mesh is ~1.8M vertices, and parsing it, its normals and its expert
// colours froze the tab for seconds. Parses the API's GLB (the mesh) or the job's upload (its
// points), and posts back typed arrays, transferred rather than copied.
import { apiColorLookup } from "./colors.js";

const GLB_MAGIC = 0x46546c67; // "glTF"
const JSON_CHUNK = 0x4e4f534a;
const BIN_CHUNK = 0x004e4942;
const COMPONENTS = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 };
const ARRAYS = { 5121: Uint8Array, 5123: Uint16Array, 5125: Uint32Array, 5126: Float32Array };
const MAX_INPUT_POINTS = 200_000; // enough to compare with the surface, light enough to orbit

const fromApiColor = apiColorLookup();
const toLinear = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);

/** The GLB's JSON and where its binary chunk starts. */
function glbChunks(buffer) {
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== GLB_MAGIC) throw new Error("the mesh is not a GLB file");
  let json = null;
  let bin = 0;
  for (let offset = 12; offset < view.byteLength;) {
    const length = view.getUint32(offset, true);
    const type = view.getUint32(offset + 4, true);
    if (type === JSON_CHUNK) json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, offset + 8, length)));
    if (type === BIN_CHUNK) bin = offset + 8;
    offset += 8 + length;
  }
  return { json, bin };
}

/** Accessor `index` as a typed array of its own (tightly packed, as trimesh writes them). */
function accessor(buffer, { json, bin }, index) {
  const { bufferView, byteOffset = 0, componentType, type, count } = json.accessors[index];
  const view = json.bufferViews[bufferView];
  const Type = ARRAYS[componentType];
  const start = bin + (view.byteOffset || 0) + byteOffset;
  const size = COMPONENTS[type];
  return { array: new Type(buffer.slice(start, start + count * size * Type.BYTES_PER_ELEMENT)), size };
}

/** Smooth vertex normals: each vertex's face normals summed (area-weighted), then normalised.
 * Plain arithmetic, no arrays per face: a 128³ mesh has millions of faces. */
function vertexNormals(p, indices) {
  const normals = new Float32Array(p.length);
  for (let f = 0; f < indices.length; f += 3) {
    const a = 3 * indices[f];
    const b = 3 * indices[f + 1];
    const c = 3 * indices[f + 2];
    const [ux, uy, uz] = [p[b] - p[a], p[b + 1] - p[a + 1], p[b + 2] - p[a + 2]];
    const [vx, vy, vz] = [p[c] - p[a], p[c + 1] - p[a + 1], p[c + 2] - p[a + 2]];
    const nx = uy * vz - uz * vy;
    const ny = uz * vx - ux * vz;
    const nz = ux * vy - uy * vx;
    for (const v of [a, b, c]) {
      normals[v] += nx;
      normals[v + 1] += ny;
      normals[v + 2] += nz;
    }
  }
  for (let i = 0; i < normals.length; i += 3) {
    const length = Math.hypot(normals[i], normals[i + 1], normals[i + 2]) || 1;
    normals[i] /= length;
    normals[i + 1] /= length;
    normals[i + 2] /= length;
  }
  return normals;
}

/** Expert counts and linear-light RGB colours from the API's 8-bit sRGB vertex colours. */
function expertColours({ array, size }) {
  const colors = new Float32Array((array.length / size) * 3);
  const counts = [];
  for (let v = 0; v < array.length / size; v++) {
    const rgb = [array[v * size], array[v * size + 1], array[v * size + 2]];
    const id = fromApiColor(...rgb);
    if (id >= 0) counts[id] = (counts[id] || 0) + 1;
    for (let k = 0; k < 3; k++) colors[3 * v + k] = toLinear(rgb[k] / 255);
  }
  return { colors, counts };
}

function parseMesh(buffer) {
  const chunks = glbChunks(buffer);
  const { attributes, indices } = chunks.json.meshes[0].primitives[0];
  const positions = accessor(buffer, chunks, attributes.POSITION).array;
  const faces = Uint32Array.from(accessor(buffer, chunks, indices).array);
  const normals = vertexNormals(positions, faces);
  const { colors, counts } = "COLOR_0" in attributes
    ? expertColours(accessor(buffer, chunks, attributes.COLOR_0)) : { colors: null, counts: [] };
  const arrays = [positions, normals, faces, colors].filter(Boolean).map((a) => a.buffer);
  return [{ positions, normals, indices: faces, colors, counts }, arrays];
}

/** The first three numbers (x y z) of each line that `pick` accepts. */
function textPoints(text, pick) {
  const points = [];
  for (const line of text.split("\n")) {
    const xyz = pick(line.trim());
    if (xyz) points.push(xyz);
  }
  return points;
}

const numbers = (line) => line.split(/\s+/).slice(0, 3).map(Number);
const finite = (xyz) => (xyz.length === 3 && xyz.every(Number.isFinite) ? xyz : null);

/** The upload's points: PLY and STL through three.js's loaders, the text formats here. */
async function inputPositions(buffer) {
  const head = new TextDecoder().decode(new Uint8Array(buffer, 0, Math.min(buffer.byteLength, 256)));
  if (head.startsWith("ply")) {
    const { PLYLoader } = await import("/vendor/three-addons/loaders/PLYLoader.js");
    return new PLYLoader().parse(buffer).getAttribute("position").array;
  }
  const text = new TextDecoder().decode(buffer);
  const isStl = head.startsWith("solid") ? /facet\s+normal/.test(head + text.slice(0, 2048))
    : (buffer.byteLength - 84) === 50 * new DataView(buffer).getUint32(80, true);
  if (isStl) {
    const { STLLoader } = await import("/vendor/three-addons/loaders/STLLoader.js");
    return new STLLoader().parse(buffer).getAttribute("position").array;
  }
  if (head.startsWith("OFF")) {
    const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    const vertices = Number(lines[1].split(/\s+/)[0]);
    return Float32Array.from(lines.slice(2, 2 + vertices).flatMap((l) => numbers(l)));
  }
  const obj = /^v\s/m.test(text);
  const pick = obj ? (l) => (l.startsWith("v ") ? finite(numbers(l.slice(2).trim())) : null) : (l) => finite(numbers(l));
  return Float32Array.from(textPoints(text, pick).flat());
}

/** At most MAX_INPUT_POINTS of `positions`, evenly spread over the list. */
function thinned(positions) {
  const count = positions.length / 3;
  const step = Math.max(1, Math.ceil(count / MAX_INPUT_POINTS));
  if (step === 1) return Float32Array.from(positions);
  const kept = new Float32Array(Math.floor(count / step) * 3);
  for (let i = 0; i < kept.length / 3; i++) kept.set(positions.subarray(i * step * 3, i * step * 3 + 3), i * 3);
  return kept;
}

async function parseInput(buffer) {
  const positions = thinned(await inputPositions(buffer));
  return [{ positions }, [positions.buffer]];
}

self.onmessage = async ({ data: { id, what, buffer } }) => {
  try {
    const [result, transfer] = what === "mesh" ? parseMesh(buffer) : await parseInput(buffer);
    self.postMessage({ id, result }, transfer);
  } catch (error) {
    self.postMessage({ id, error: error.message });
  }
};

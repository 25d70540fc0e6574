// 3D results: the marching-cubes mesh of the fitted SDF in an orbit viewer, with per-vertex
// expert colours (and their shares) on a toggle, the uploaded points on request, and downloads
// in three formats. The mesh comes as GLB (a third of PLY's bytes) and is parsed in a worker.
// three.js from web/node_modules (`make install`), never a CDN; its addons through
// /vendor/three-addons, which spells out their bare "three" import (no import map: see page.py).
import * as THREE from "/vendor/three/build/three.module.js";
import { OrbitControls } from "/vendor/three-addons/controls/OrbitControls.js";
import { fileStem, jobUrl } from "./api.js";
import { fillLegend } from "./legend.js";
import { downloadOnClick, fetchOutput } from "./outputs.js";

const PLAIN = new THREE.Color(0xb8bec8);
// Past this resolution a mesh has millions of vertices (128³: ~1.8M, 74 MB as PLY): ask first.
const LARGE_RESOLUTION = 128;
const KEY_TURN = Math.PI / 18; // an arrow key turns the view by 10°
const KEY_ZOOM = 1.2;

/** Parse in mesh-worker.js: `what` is "mesh" (the API's GLB) or "input" (the upload's points). */
function parser() {
  const worker = new Worker(new URL("./mesh-worker.js", import.meta.url), { type: "module" });
  const waiting = new Map();
  let next = 0;
  worker.onerror = (event) => { // the worker itself failed (did not load): fail every parse
    waiting.forEach(({ reject }) => reject(new Error(`The mesh reader failed: ${event.message || "it did not start"}`)));
    waiting.clear();
  };
  worker.onmessage = ({ data: { id, result, error } }) => {
    const { resolve, reject } = waiting.get(id);
    waiting.delete(id);
    if (error) reject(new Error(error));
    else resolve(result);
  };
  return {
    parse(what, buffer) {
      const id = next++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        worker.postMessage({ id, what, buffer }, [buffer]);
      });
    },
    terminate: () => worker.terminate(),
  };
}

function meshGeometry({ positions, normals, indices, colors }) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3));
  geometry.setAttribute("normal", new THREE.BufferAttribute(normals, 3));
  if (colors) geometry.setAttribute("color", new THREE.BufferAttribute(colors, 3));
  geometry.setIndex(new THREE.BufferAttribute(indices, 1));
  return geometry;
}

/** Arrow keys turn the camera around its target, + and - zoom, 0 returns to the start. */
function keyboard(container, camera, controls, reset) {
  const turn = (left, up) => {
    const offset = camera.position.clone().sub(controls.target);
    const spherical = new THREE.Spherical().setFromVector3(offset);
    spherical.theta += left;
    spherical.phi = Math.min(Math.max(spherical.phi + up, 0.01), Math.PI - 0.01);
    camera.position.copy(controls.target).add(new THREE.Vector3().setFromSpherical(spherical));
  };
  const zoom = (factor) => {
    camera.position.sub(controls.target).multiplyScalar(factor).add(controls.target);
  };
  const keys = {
    ArrowLeft: () => turn(-KEY_TURN, 0), ArrowRight: () => turn(KEY_TURN, 0),
    ArrowUp: () => turn(0, -KEY_TURN), ArrowDown: () => turn(0, KEY_TURN),
    "+": () => zoom(1 / KEY_ZOOM), "=": () => zoom(1 / KEY_ZOOM), "-": () => zoom(KEY_ZOOM),
  };
  container.addEventListener("keydown", (event) => {
    if (event.key === "0" || event.key === "Home") reset();
    else if (keys[event.key]) keys[event.key]();
    else return;
    event.preventDefault(); // the page does not scroll under the viewer
    controls.update();
  });
}

function createViewer(container) {
  const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  container.append(renderer.domElement);

  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xf4f5f7);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x445566, 2));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(1, 2, 3);
  scene.add(sun);

  const START = new THREE.Vector3(1.6, 1.2, 2.4).normalize();
  const camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
  camera.position.copy(START);
  const controls = new OrbitControls(camera, renderer.domElement);
  const material = new THREE.MeshStandardMaterial({ color: PLAIN, roughness: 0.7, side: THREE.DoubleSide });
  const pointMaterial = new THREE.PointsMaterial({ color: 0x1d2430, sizeAttenuation: true });
  let mesh = null;
  let points = null;

  const draw = () => renderer.render(scene, camera);
  /** The start view: the shape from the front-right, above, filling the viewer. */
  const reset = () => {
    if (!mesh) return;
    const { center, radius } = mesh.geometry.boundingSphere;
    controls.target.copy(center);
    camera.position.copy(center).addScaledVector(START, radius * 3);
    camera.near = radius / 100;
    camera.far = radius * 100;
    camera.updateProjectionMatrix();
    pointMaterial.size = radius / 150;
    controls.update();
    draw();
  };
  controls.addEventListener("change", draw);
  keyboard(container, camera, controls, reset);
  const resize = () => {
    const width = container.clientWidth;
    const height = container.clientHeight;
    renderer.setSize(width, height, false); // the drawing buffer; CSS sizes the canvas to its box
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
    draw();
  };
  const observer = new ResizeObserver(resize);
  observer.observe(container);

  return {
    reset,
    show(geometry) {
      if (mesh) {
        scene.remove(mesh);
        mesh.geometry.dispose();
      }
      geometry.computeBoundingSphere();
      mesh = new THREE.Mesh(geometry, material);
      scene.add(mesh);
      reset();
    },
    showPoints(positions) {
      if (!points) {
        points = new THREE.Points(new THREE.BufferGeometry(), pointMaterial);
        points.geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3));
      }
      scene.add(points);
      draw();
    },
    hidePoints() {
      if (points) scene.remove(points);
      draw();
    },
    setExpertColours(on) {
      material.vertexColors = on && Boolean(mesh?.geometry.hasAttribute("color"));
      material.color = material.vertexColors ? new THREE.Color(0xffffff) : PLAIN;
      material.needsUpdate = true;
      draw();
    },
    dispose() {
      observer.disconnect();
      controls.dispose();
      mesh?.geometry.dispose();
      points?.geometry.dispose();
      material.dispose();
      pointMaterial.dispose();
      renderer.dispose();
    },
  };
}

// The view's markup: app.js puts it in the result panel, then calls `mount`.
export const markup = `<div class="view-root">
  <div class="controls">
    <div class="field">
      <label for="mesh-resolution">Marching cubes resolution</label>
      <select id="mesh-resolution">
        <option value="32">32³</option>
        <option value="64" selected>64³</option>
        <option value="128">128³</option>
        <option value="256">256³ (large: asks first)</option>
      </select>
    </div>
    <label class="check"><input type="checkbox" id="mesh-experts" checked> Expert colours</label>
    <label class="check"><input type="checkbox" id="mesh-input"> Input points</label>
    <button type="button" id="mesh-reset">Reset view</button>
  </div>
  <!-- Interactive, so not role="img": keys and drags go to the viewer, not the screen reader. -->
  <div class="viewer" id="viewer" tabindex="0" role="application" aria-roledescription="3D viewer"
       aria-label="The reconstructed shape: drag or arrow keys to rotate, scroll or + and - to zoom, 0 to reset the view"></div>
  <p class="hint" id="viewer-status" aria-live="polite"></p>
  <ul class="legend" id="mesh-legend" aria-label="Share of the surface's vertices each expert draws"></ul>
  <p class="actions">Download
    <a class="button" id="download-ply" download>PLY</a>
    <a class="button" id="download-obj" download>OBJ</a>
    <a class="button" id="download-glb" download>GLB</a>
  </p>
</div>`;

/**
 * Bring the view in `root` to life for a succeeded 3D `job` (it fetches the upload itself, parsed
 * in the worker, and only when asked). Returns what to run when the view goes.
 */
export function mount(root, job, { showError }) {
  const $ = (id) => root.querySelector(`#${id}`);
  const status = $("viewer-status");
  const resolution = $("mesh-resolution");
  const colours = $("mesh-experts");
  let viewer;
  try {
    viewer = createViewer($("viewer"));
  } catch (error) {
    showError(new Error(`The 3D viewer needs WebGL, which this browser could not start (${error.message}).`));
    return () => {};
  }
  const worker = parser();
  let request = new AbortController(); // the mesh in flight: another resolution or closing aborts it
  let shownResolution = resolution.value;
  let inputPoints = null; // a promise of the upload's positions, parsed once
  // In the input's own coordinates, so that the uploaded points lie on the surface.
  const meshUrl = (res, format) => jobUrl(job.id, "mesh", {
    resolution: res, format, experts: true, original_frame: true,
  });

  async function load(signal) {
    const res = resolution.value;
    for (const format of ["ply", "obj", "glb"]) {
      Object.assign($(`download-${format}`), {
        href: meshUrl(res, format), download: `${fileStem(job)}-${res}.${format}`,
      });
    }
    status.textContent = `Extracting the mesh at ${res}³…`;
    const blob = await fetchOutput(meshUrl(res, "glb"), signal);
    status.textContent = `Reading the mesh at ${res}³ (${(blob.size / 1e6).toFixed(1)} MB)…`;
    const parsed = await worker.parse("mesh", await blob.arrayBuffer());
    if (signal.aborted) return;
    fillLegend($("mesh-legend"), parsed.counts);
    viewer.show(meshGeometry(parsed));
    viewer.setExpertColours(colours.checked);
    shownResolution = res;
    const vertices = parsed.positions.length / 3;
    status.textContent = `${vertices.toLocaleString()} vertices at ${res}³. Drag or arrow keys to rotate, `
      + "scroll, pinch or + and - to zoom, right-drag to pan, 0 to reset.";
  }

  const reload = () => {
    request.abort();
    request = new AbortController();
    load(request.signal).catch((error) => {
      if (error.name === "AbortError") return; // superseded by another resolution
      status.textContent = "";
      showError(error);
    });
  };

  const large = (res) => Number(res) > LARGE_RESOLUTION && !window.confirm(
    `A ${res}³ mesh has several million vertices: tens of MB to download, and slow to render on `
    + "a modest machine. Extract it anyway?");

  /** The upload's points over the mesh, fetched and parsed the first time they are asked for. */
  async function showInput() {
    inputPoints ||= fetchOutput(job.urls.input)
      .then((blob) => blob.arrayBuffer())
      .then((buffer) => worker.parse("input", buffer));
    inputPoints.catch(() => { inputPoints = null; }); // asked again next time
    status.textContent = "Reading the uploaded points…";
    const { positions } = await inputPoints;
    status.textContent = `${(positions.length / 3).toLocaleString()} of the uploaded points shown, in black.`;
    if ($("mesh-input").checked) viewer.showPoints(positions);
  }

  for (const format of ["ply", "obj", "glb"]) downloadOnClick($(`download-${format}`), showError);
  resolution.addEventListener("change", () => {
    if (large(resolution.value)) resolution.value = shownResolution;
    else reload();
  });
  colours.addEventListener("change", () => {
    viewer.setExpertColours(colours.checked);
    $("mesh-legend").hidden = !colours.checked;
  });
  $("mesh-input").addEventListener("change", (event) => {
    if (event.target.checked) showInput().catch(showError);
    else viewer.hidePoints();
  });
  $("mesh-reset").addEventListener("click", () => viewer.reset());
  reload();
  return () => {
    request.abort();
    worker.terminate();
    viewer.dispose();
  };
}

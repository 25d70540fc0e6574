// 3D results: the marching-cubes mesh of the fitted SDF in an orbit viewer, with per-vertex
// expert colours (and their shares) on a toggle and downloads in three formats.
// three.js from web/node_modules (`make install`), never a CDN; its addons through
// /vendor/three-addons, which spells out their bare "three" import (no import map: see page.py).
import * as THREE from "/vendor/three/build/three.module.js";
import { OrbitControls } from "/vendor/three-addons/controls/OrbitControls.js";
import { PLYLoader } from "/vendor/three-addons/loaders/PLYLoader.js";
import { fileStem, jobUrl } from "./api.js";
import { apiColorLookup } from "./colors.js";
import { fillLegend } from "./legend.js";
import { downloadOnClick, fetchOutput } from "./outputs.js";

const PLAIN = new THREE.Color(0xb8bec8);

// PLYLoader stores 8-bit vertex colours converted to linear light: compare and write them so.
const linear8 = ([r, g, b]) => {
  const color = new THREE.Color().setRGB(r / 255, g / 255, b / 255, THREE.SRGBColorSpace);
  return [color.r, color.g, color.b].map((c) => Math.round(c * 255));
};
const fromApiColor = apiColorLookup(linear8);

/** Vertices per expert, from the expert colours the API gave `geometry`'s vertices. */
function countExperts(geometry) {
  const colors = geometry.getAttribute("color");
  const counts = [];
  if (!colors) return counts;
  for (let v = 0; v < colors.count; v++) {
    const id = fromApiColor(...[0, 1, 2].map((c) => colors.array[v * colors.itemSize + c]));
    if (id >= 0) counts[id] = (counts[id] || 0) + 1;
  }
  return counts;
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

  const camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
  camera.position.set(1.6, 1.2, 2.4);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.listenToKeyEvents(container); // arrow keys pan while the viewer has focus
  const material = new THREE.MeshStandardMaterial({ color: PLAIN, roughness: 0.7, side: THREE.DoubleSide });
  let mesh = null;

  const draw = () => renderer.render(scene, camera);
  const frame = (geometry) => {
    geometry.computeBoundingSphere();
    const { center, radius } = geometry.boundingSphere;
    const direction = camera.position.clone().sub(controls.target).normalize();
    controls.target.copy(center);
    camera.position.copy(center).addScaledVector(direction, radius * 3);
    camera.near = radius / 100;
    camera.far = radius * 100;
    camera.updateProjectionMatrix();
    controls.update();
    draw();
  };
  controls.addEventListener("change", draw);
  const resize = () => {
    const width = container.clientWidth;
    const height = container.clientHeight;
    renderer.setSize(width, height);
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
    draw();
  };
  const observer = new ResizeObserver(resize);
  observer.observe(container);

  return {
    show(geometry) {
      if (mesh) {
        scene.remove(mesh);
        mesh.geometry.dispose();
      }
      if (!geometry.hasAttribute("normal")) geometry.computeVertexNormals();
      mesh = new THREE.Mesh(geometry, material);
      scene.add(mesh);
      frame(geometry);
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
      material.dispose();
      renderer.dispose();
    },
  };
}

/** Fill the cloned `view-sdf` template in `root` for a succeeded 3D `job`. */
export function mountMeshView(root, job, showError) {
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
  let request = new AbortController(); // the mesh in flight: another resolution or closing aborts it
  const meshUrl = (res, format) => jobUrl(job.id, "mesh", { resolution: res, format, experts: true });

  async function load(signal) {
    const res = resolution.value;
    for (const format of ["ply", "obj", "glb"]) {
      Object.assign($(`download-${format}`), {
        href: meshUrl(res, format), download: `${fileStem(job)}-${res}.${format}`,
      });
    }
    status.textContent = `Extracting the mesh at ${res}³…`;
    const blob = await fetchOutput(meshUrl(res, "ply"), signal);
    const geometry = new PLYLoader().parse(await blob.arrayBuffer());
    if (signal.aborted) return;
    fillLegend($("mesh-legend"), countExperts(geometry));
    viewer.show(geometry);
    viewer.setExpertColours(colours.checked);
    const vertices = geometry.getAttribute("position").count;
    status.textContent = `${vertices.toLocaleString()} vertices at ${res}³. Drag to rotate, scroll or pinch to zoom, arrow keys to pan.`;
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
  for (const format of ["ply", "obj", "glb"]) downloadOnClick($(`download-${format}`), showError);
  resolution.addEventListener("change", reload);
  colours.addEventListener("change", () => {
    viewer.setExpertColours(colours.checked);
    $("mesh-legend").hidden = !colours.checked;
  });
  reload();
  return () => {
    request.abort();
    viewer.dispose();
  };
}

// 3D results: the marching-cubes mesh of the fitted SDF in an orbit viewer, with per-vertex
// expert colours on a toggle and downloads in three formats.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { PLYLoader } from "three/addons/loaders/PLYLoader.js";
import { fetchOnClick, fileStem, getBlob, jobUrl } from "./api.js";

const PLAIN = new THREE.Color(0xb8bec8);

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
  let latest = 0; // only the newest resolution's mesh is shown when requests overlap

  async function load() {
    const request = ++latest;
    const res = resolution.value;
    for (const format of ["ply", "obj", "glb"]) {
      const link = $(`download-${format}`);
      link.href = jobUrl(job.id, "mesh", { resolution: res, format, experts: true });
      link.download = `${fileStem(job)}-${res}.${format}`;
    }
    status.textContent = `Extracting the mesh at ${res}³…`;
    const blob = await getBlob(jobUrl(job.id, "mesh", { resolution: res, format: "ply", experts: true }));
    if (request !== latest) return;
    const geometry = new PLYLoader().parse(await blob.arrayBuffer());
    viewer.show(geometry);
    viewer.setExpertColours(colours.checked);
    const vertices = geometry.getAttribute("position").count;
    status.textContent = `${vertices.toLocaleString()} vertices at ${res}³. Drag to rotate, scroll or pinch to zoom, arrow keys to pan.`;
  }

  const reload = () => load().catch((error) => {
    status.textContent = "";
    showError(error);
  });
  for (const format of ["ply", "obj", "glb"]) fetchOnClick($(`download-${format}`), showError);
  resolution.addEventListener("change", reload);
  colours.addEventListener("change", () => viewer.setExpertColours(colours.checked));
  reload();
  return () => viewer.dispose();
}

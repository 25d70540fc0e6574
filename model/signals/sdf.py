"""3D shapes as signed distance functions, from oriented point clouds or triangle meshes.

Inputs: a point cloud with normals (PLY with nx ny nz, or XYZ text "x y z nx ny nz" per line)
or a triangle mesh (OBJ, PLY, OFF, STL) from which oriented surface points are sampled.
docs/method.md#3d-shapes is the only protocol: points are centred at their mean and divided by their
max |coordinate| (the "normalised frame"), the fit domain is [-1.2, 1.2]^3, and sdf_gt(x) is the
distance to the nearest input point, negative where x lies behind that point's normal.
meta() keeps `centre` and `scale`, so x_original = x_normalised * scale + centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from scipy import ndimage  # type: ignore[import-untyped]
from scipy.spatial import cKDTree  # type: ignore[import-untyped]
from skimage.measure import marching_cubes
from torch import Tensor

from model.network import NeuralExperts
from model.render import Rendered, expert_colors
from model.signals._geometry import (
    MAX_POINTS,
    MIN_POINTS,
    SUFFIX_FORMATS,
    SURFACE_SAMPLES,
    normalise,
    oriented_points,
    read_geometry,
    sniff,
)
from model.signals.base import (
    Batch,
    Cap,
    Grid,
    Option,
    Output,
    PoorResult,
    SignalError,
    SignalKind,
    argmax_values,
    expert_weights,
    register,
)

DOMAIN = 1.2  # docs/method.md#3d-shapes: shapes in [-1, 1]^3 are fitted on [-1.2, 1.2]^3
PRETRAIN_CELLS = 64  # docs/method.md#manager-pretraining: one random expert label per cell of a 64^3 grid
PART_POINTS = 10_000  # docs/method.md#3d-shapes: 10k surface + 10k near + 10k far points per step
NEAR_NOISE, FAR_NOISE = 2e-3, 2e-1  # docs/method.md#3d-shapes: Laplace scales of the near and far samples
CLAMP = 3.0  # docs/method.md#losses: predictions and targets clamped to +-3 in the L1 term
LOSS_WEIGHT = 1000.0  # docs/method.md#losses: both SDF terms are weighted by 1000
# Pool of near / far training samples with their sdf_gt, computed once at load (~3 s of one CPU
# core). Measured on 250k spot points: a far query costs ~12 us of one core, a near one ~1.5 us,
# so 10k + 10k fresh queries per step (~0.14 s) would dwarf a GPU step (a few ms); drawing from
# the pool is a gather on the device. The price: samples repeat (fast preset: ~40 times each).
POOL_SIZE = 250_000
EVAL_RESOLUTION = 128  # docs/method.md#3d-shapes: IoU on a 128^3 grid
NEAR_CELLS = 2  # true_volume: exact sdf_gt within this many grid cells of an input point
SURE_SHARE = 0.99  # true_volume: a far region takes the sign this share of its border has
CHAMFER_POINTS = 300_000  # docs/method.md#3d-shapes: 300k points on each side of the Chamfer distance
TRIMAP_BAND = 1e-3  # docs/method.md#3d-shapes: trimap IoU(d) with d = 0.001 in the main table
CHAMFER_SCALE = 1e5  # docs/method.md#3d-shapes: Chamfer reported x1e5
OUTPUT_RESOLUTION = 128  # write_outputs: a mesh in seconds on a GPU, still detailed
MESH_RESOLUTIONS = (16, 512)  # 512^3 float32 predictions are 512 MB; 1024^3 would be 4 GB
MESH_RESOLUTION = 256  # mesh()'s default: a second or two on a GPU, minutes on a CPU core
MESH_MEDIA_TYPES = {"ply": "application/octet-stream", "obj": "model/obj", "glb": "model/gltf-binary"}

# --------------------------------------------------------------------------- ground truth


def kd_tree(points: np.ndarray) -> cKDTree:
    """scipy's KD-tree, tuned for points on a surface queried from off it.

    Measured on 250k points sampled on spot: a far query takes ~94 us of one core with the
    defaults (leafsize 16, compact nodes), ~12 us with these settings, with identical answers.
    """
    return cKDTree(points, leafsize=32, compact_nodes=False)


class SignedDistance:
    """sdf_gt(x) = +-|x - p|, p the nearest input point, negative where (x - p) . n_p < 0."""

    def __init__(self, points: np.ndarray, normals: np.ndarray) -> None:
        self.points, self.normals = points, normals
        self.tree = kd_tree(points)

    def __call__(self, x: np.ndarray, within: float = math.inf) -> np.ndarray:  # (M, 3) -> (M,)
        """sdf_gt at `x`; inf where no input point lies within `within` (a bounded query is cheap)."""
        distance, nearest = self.tree.query(x, workers=-1, distance_upper_bound=within)
        near = np.isfinite(distance)
        p, n = self.points[nearest[near]], self.normals[nearest[near]]
        side = np.einsum("ij,ij->i", x[near] - p, n)
        signed: np.ndarray = distance.copy()
        signed[near] = np.where(side < 0, -distance[near], distance[near])
        return signed


def reflect(x: np.ndarray, bound: float = DOMAIN) -> np.ndarray:
    """Fold coordinates into [-bound, bound] by mirroring at the faces.

    Mirroring (a triangle wave) keeps an overshooting far sample beside where it was drawn,
    where a modulo wrap would move it to the opposite face of the domain.
    """
    folded = np.mod(x + bound, 4 * bound)
    return 2 * bound - np.abs(folded - 2 * bound) - bound


def _pool(sdf: SignedDistance, count: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) rows x, y, z, sdf_gt: surface points + Laplace noise, folded into the domain."""
    base = sdf.points[rng.integers(0, len(sdf.points), count)]
    x = reflect(base + rng.laplace(0.0, noise, base.shape))
    return np.column_stack([x, sdf(x)])


# --------------------------------------------------------------------------- volumes and meshes


def _axis(resolution: int) -> np.ndarray:
    """The grid's coordinates along each axis: resolution values over the domain, float32."""
    return np.linspace(-DOMAIN, DOMAIN, resolution, dtype=np.float32)


def _slabs(resolution: int) -> Iterator[np.ndarray]:
    """Grid points over the domain one x-slab at a time, (resolution^2, 3) float32 each."""
    axis = _axis(resolution)
    y, z = np.meshgrid(axis, axis, indexing="ij")
    for x in axis:
        yield np.stack([np.full_like(y, x), y, z], axis=-1).reshape(-1, 3)


def _volume(fn: Callable[[np.ndarray], np.ndarray], resolution: int) -> np.ndarray:
    """fn on every grid point, (resolution,) * 3, memory bounded by one slab at a time."""
    return np.stack([fn(s).reshape(resolution, resolution) for s in _slabs(resolution)])


def predicted_volume(model: NeuralExperts, resolution: int) -> np.ndarray:
    """The routed (argmax-expert) prediction on the resolution^3 grid, float32."""
    device = next(model.parameters()).device

    def predict(points: np.ndarray) -> np.ndarray:
        values, _ = model.predict(torch.from_numpy(points).to(device))
        return values[:, 0].cpu().numpy()

    return _volume(predict, resolution)


def true_volume(sdf: SignedDistance, resolution: int) -> np.ndarray:
    """sdf_gt on the resolution^3 grid as the evaluation reads it: exact within NEAR_CELLS cells
    of an input point; beyond, each far region (6-connected) is +-inf by the sign that at least
    SURE_SHARE of the near grid points bordering it have, or queried exactly where its border is
    split (a scan's hole joins inside and out: the bunny's border is 37% inside).

    IoU reads signs and the trimap band near values only, and an unbounded query from far off
    the surface costs ~40x a bounded one: spot at 128^3 took 40 s of 2 cores, now ~1 s, with
    the same signs. Far from the surface the nearest normal's sign is least sure: fandisk's 29k
    inside far points are bordered by 9,901 inside points and 1 outside, and that sign differs
    from the nearest normal's at 21 far points of its 96^3 grid."""
    axis = _axis(resolution)
    volume = _volume(lambda x: sdf(x, within=NEAR_CELLS * (axis[1] - axis[0])), resolution)
    far = np.isinf(volume)
    regions, count = ndimage.label(far)
    inside, border = np.zeros(count + 1), np.zeros(count + 1)
    for dim in range(3):
        lower = tuple(slice(None, -1) if d == dim else slice(None) for d in range(3))
        upper = tuple(slice(1, None) if d == dim else slice(None) for d in range(3))
        for here, there in ((lower, upper), (upper, lower)):
            meets = ~far[here] & far[there]
            inside += np.bincount(regions[there][meets], volume[here][meets] < 0, count + 1)
            border += np.bincount(regions[there][meets], minlength=count + 1)
    share = inside / np.maximum(border, 1)
    volume[far] = np.where((share >= SURE_SHARE)[regions[far]], -np.inf, np.inf)
    unsure = far & ((share > 1 - SURE_SHARE) & (share < SURE_SHARE))[regions]
    if unsure.any():
        volume[unsure] = sdf(np.stack([axis[i] for i in np.nonzero(unsure)], axis=1))
    return volume


def level_set(volume: np.ndarray) -> trimesh.Trimesh | None:
    """Marching cubes of the zero level set (normalised frame), None when it is empty, without
    the pieces that the domain's walls cut (`without_cut_pieces`)."""
    if not volume.min() < 0 < volume.max():  # also None for NaN volumes
        return None
    spacing = 2 * DOMAIN / (volume.shape[0] - 1)
    # skimage's default gradient direction orients faces outward for negative-inside SDFs.
    vertices, faces, _, _ = marching_cubes(
        volume, level=0.0, spacing=(spacing,) * 3
    )
    return without_cut_pieces(trimesh.Trimesh(vertices - DOMAIN, faces, process=False), spacing)


def without_cut_pieces(surface: trimesh.Trimesh, spacing: float) -> trimesh.Trimesh:
    """`surface` less its connected pieces that reach the domain's walls. The shape lies within
    [-1, 1]^3, so such a piece is none of it: it is where a short fit left the SDF negative far
    from the surface (spot after 120 CPU-seconds: 40 open scraps in the corners beside one closed
    shape), and the wall cuts it open. Kept whole when every piece reaches a wall."""
    pieces = trimesh.graph.connected_component_labels(surface.face_adjacency, len(surface.faces))
    on_wall = np.any(np.abs(surface.vertices) > DOMAIN - spacing / 2, axis=1)
    cut = np.unique(pieces[on_wall[surface.faces].any(axis=1)])
    keep = ~np.isin(pieces, cut)
    if not keep.any() or keep.all():
        return surface
    surface.update_faces(keep)
    surface.remove_unreferenced_vertices()
    return surface


# --------------------------------------------------------------------------- the signal


@dataclass
class SdfSignal:
    surface: Tensor  # (N, 4) normalised surface points and their sdf 0, on the fit device
    sdf_gt: SignedDistance  # on the CPU: scipy's KD-tree
    centre: tuple[float, float, float]
    scale: float
    source: str  # "mesh" (sampled) or "points" (the input cloud)
    eval_resolution: int = EVAL_RESOLUTION
    chamfer_points: int = CHAMFER_POINTS
    trimap_band: float = TRIMAP_BAND
    pool_size: int = POOL_SIZE
    grid: Grid = Grid((PRETRAIN_CELLS,) * 3, -DOMAIN, DOMAIN)
    kind: str = "sdf"
    task: str = "sdf"
    in_dim: int = 3
    out_dim: int = 1

    def meta(self) -> dict[str, Any]:
        return {"centre": list(self.centre), "scale": self.scale, "points": len(self.surface),
                "source": self.source}

    @cached_property
    def near(self) -> Tensor:
        """(P, 4) near-surface samples and their sdf_gt. Built on first use, so validating a
        file (loading it without fitting, as the API does) skips the costly KD-tree queries."""
        return self._pool(NEAR_NOISE, seed=0)

    @cached_property
    def far(self) -> Tensor:
        """(P, 4) far samples and their sdf_gt, built on first use like `near`."""
        return self._pool(FAR_NOISE, seed=1)

    def _pool(self, noise: float, seed: int) -> Tensor:
        rng = np.random.default_rng(seed)  # fixed: one file always gives the same pools
        rows = _pool(self.sdf_gt, self.pool_size, noise, rng)
        return torch.from_numpy(rows.astype(np.float32)).to(self.surface.device)

    def batch(self, generator: torch.Generator, max_points: int) -> Batch:
        """Surface rows first (Batch.n_surface), then near, then far: 10k each, or a third of
        max_points each when that is smaller (docs/method.md#3d-shapes)."""
        n = max(1, min(PART_POINTS, max_points // 3))
        rows = [
            part[torch.randint(0, len(part), (n,), generator=generator, device=part.device)]
            for part in (self.surface, self.near, self.far)
        ]
        data = torch.cat(rows)
        return Batch(data[:, :3], data[:, 3:], n_surface=n)

    def grid_values(self) -> None:
        return None  # no values live on the pretraining grid: k-means pretraining does not apply

    def loss(self, values: Tensor, logits: Tensor | None, batch: Batch) -> dict[str, Tensor]:
        """docs/method.md#losses: 1000 mean q_i |f_i(x_s)|
        + 1000 mean q_i |clamp(f_i(x)) - clamp(sdf_gt(x))|."""
        q = expert_weights(logits, values)  # (K, N)
        f = values[..., 0]  # (K, N)
        ns = batch.n_surface
        surface = LOSS_WEIGHT * (q[:, :ns] * f[:, :ns].abs()).mean()
        gap = f[:, ns:].clamp(-CLAMP, CLAMP) - batch.target[ns:, 0].clamp(-CLAMP, CLAMP)
        sdf = LOSS_WEIGHT * (q[:, ns:] * gap.abs()).mean()
        return {"loss": surface + sdf, "surface": surface, "sdf": sdf}

    def progress_metric(self, values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        """Mean |sdf error| of the argmax output over the batch."""
        return float((argmax_values(values, logits) - batch.target).abs().mean())

    def evaluate(self, model: NeuralExperts) -> dict[str, float]:
        """IoU and trimap IoU of the inside sets on the eval grid, Chamfer x1e5 (docs/method.md#3d-shapes).

        trimap_iou is NaN when no grid point lies within trimap_band of an input point; chamfer
        is inf when the prediction has no zero level set.
        """
        predicted = predicted_volume(model, self.eval_resolution)
        truth = true_volume(self.sdf_gt, self.eval_resolution)
        band = np.abs(truth) < self.trimap_band
        return {
            "iou": _iou(predicted < 0, truth < 0),
            "trimap_iou": _iou(predicted[band] < 0, truth[band] < 0),
            "chamfer": self._chamfer(level_set(predicted)),
        }

    def _chamfer(self, mesh: trimesh.Trimesh | None) -> float:
        """Mean squared nearest distance both ways (summed), x1e5, normalised frame."""
        if mesh is None:
            return math.inf
        ours = np.asarray(trimesh.sample.sample_surface(mesh, self.chamfer_points, seed=0)[0])
        truth = self.sdf_gt.points
        if len(truth) > self.chamfer_points:
            rng = np.random.default_rng(0)
            truth = truth[rng.choice(len(truth), self.chamfer_points, replace=False)]
        to_truth, _ = kd_tree(truth).query(ours, workers=-1)
        to_ours, _ = kd_tree(ours).query(truth, workers=-1)
        return float((np.mean(to_truth**2) + np.mean(to_ours**2)) * CHAMFER_SCALE)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return math.nan if union == 0 else float(np.count_nonzero(a & b) / union)


def _check_options(max_points: int, surface_samples: int, pool_size: int,
                   eval_resolution: int, chamfer_points: int, trimap_band: float) -> None:
    lowest = {"max_points": (max_points, 1), "surface_samples": (surface_samples, MIN_POINTS),
              "pool_size": (pool_size, 1), "eval_resolution": (eval_resolution, 2),
              "chamfer_points": (chamfer_points, 1)}
    for name, (value, low) in lowest.items():
        if value < low:
            raise SignalError(f"{name} must be >= {low}, got {value}", "invalid_option")
    if not trimap_band > 0:
        raise SignalError(f"trimap_band must be > 0, got {trimap_band}", "invalid_option")


def load(path: Path, protocol: str | None = None, device: str = "cpu",
         max_points: int = MAX_POINTS, surface_samples: int = SURFACE_SAMPLES,
         pool_size: int = POOL_SIZE, eval_resolution: int = EVAL_RESOLUTION,
         chamfer_points: int = CHAMFER_POINTS, trimap_band: float = TRIMAP_BAND) -> SdfSignal:
    """Read, orient and normalise; the near / far sample pools (pool_size each) come on first use."""
    _check_options(max_points, surface_samples, pool_size, eval_resolution, chamfer_points,
                   trimap_band)
    geometry = read_geometry(path, max_points)
    points, normals = oriented_points(geometry, path.name, max_points, surface_samples)
    points, centre, scale = normalise(points, path.name)
    surface = np.column_stack([points, np.zeros(len(points))]).astype(np.float32)
    return SdfSignal(
        surface=torch.from_numpy(surface).to(device),
        sdf_gt=SignedDistance(points, normals), pool_size=pool_size,
        centre=(float(centre[0]), float(centre[1]), float(centre[2])), scale=scale,
        source="mesh" if geometry.faces is not None else "points",
        eval_resolution=eval_resolution, chamfer_points=chamfer_points, trimap_band=trimap_band,
    )


# --------------------------------------------------------------------------- outputs


def _surface_mesh(model: NeuralExperts, resolution: int, experts: bool) -> trimesh.Trimesh | None:
    surface = level_set(predicted_volume(model, resolution))
    if surface is None or not experts:
        return surface
    device = next(model.parameters()).device
    _, ids = model.predict(torch.from_numpy(surface.vertices.astype(np.float32)).to(device))
    return trimesh.Trimesh(surface.vertices, surface.faces,
                           vertex_colors=expert_colors(ids.cpu().numpy()), process=False)


def _export(surface: trimesh.Trimesh, fmt: str) -> Rendered:
    data = surface.export(file_type=fmt)  # bytes for PLY and GLB, str for OBJ
    assert isinstance(data, bytes | str), f"trimesh exported {type(data)} for {fmt}"
    return Rendered(data if isinstance(data, bytes) else data.encode(), MESH_MEDIA_TYPES[fmt],
                    f".{fmt}")


def mesh(model: NeuralExperts, meta: dict[str, Any], resolution: int = MESH_RESOLUTION, format: str = "ply",
         experts: bool = False, original_frame: bool = False) -> Rendered:
    """The zero level set by marching cubes on a resolution^3 grid over [-1.2, 1.2]^3.

    Vertices are in the normalised frame (the shape within [-1, 1]^3) unless original_frame,
    which maps them back to the input's coordinates. experts colours each vertex by its expert.
    """
    low, high = MESH_RESOLUTIONS
    if not low <= resolution <= high:
        raise ValueError(f"resolution must be in [{low}, {high}], got {resolution}")
    if format not in MESH_MEDIA_TYPES:
        raise ValueError(f"format must be one of {', '.join(MESH_MEDIA_TYPES)}, got {format!r}")
    surface = _surface_mesh(model, resolution, experts)
    if surface is None:
        raise ValueError(f"the predicted SDF has no zero level set on the {resolution}^3 grid "
                         "(one sign everywhere): there is no surface to mesh")
    if original_frame:
        surface.vertices = surface.vertices * meta["scale"] + np.asarray(meta["centre"])
    return _export(surface, format)


def write_outputs(model: NeuralExperts, meta: dict[str, Any], folder: Path) -> list[Path]:
    """mesh.ply and experts.ply (expert-coloured) in the normalised frame; none when the
    prediction has no zero level set (the metrics then report chamfer = inf)."""
    surface = _surface_mesh(model, OUTPUT_RESOLUTION, experts=True)
    if surface is None:
        return []
    plain = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    written = []
    for name, shape in (("mesh", plain), ("experts", surface)):
        path = folder / f"{name}.ply"
        path.write_bytes(_export(shape, "ply").data)
        written.append(path)
    return written


KIND = register(
    SignalKind(
        name="sdf",
        label="3D shape",
        description="a point cloud with normals (PLY, XYZ) or a triangle mesh (OBJ, PLY, OFF, "
        "STL), fitted as a signed distance function",
        coordinates="(x, y, z) in [-1.2, 1.2]^3",
        suffixes=tuple(SUFFIX_FORMATS),
        sniff=sniff,
        loader=load,
        write_outputs=write_outputs,
        # bench/RESULTS.md (bench:realsize): 110 to 134 steps of spot in a 120 s budget on 2-core CPUs.
        cpu_step_s=0.9,
        metric_name="sdf_l1",
        outputs={
            "mesh": Output(
                mesh, "the zero level set by marching cubes, as PLY, OBJ or GLB",
                tuple(dict.fromkeys(MESH_MEDIA_TYPES.values())),
                (Option("resolution", int, "grid cells a side", minimum=MESH_RESOLUTIONS[0],
                        cap="max_mesh_resolution"),
                 Option("format", str, "the file format", choices=tuple(MESH_MEDIA_TYPES),
                        from_suffix=True),
                 Option("experts", bool, "colour vertices by expert"),
                 Option("original_frame", bool, "the input's coordinates")),
                suffixes=tuple(f".{fmt}" for fmt in MESH_MEDIA_TYPES)),
        },
        media_family="model",
        caps=(
            Cap("max_sdf_points", 2_000_000, "point-cloud cap", load_option="max_points"),
            Cap("max_mesh_resolution", MESH_RESOLUTIONS[1], "largest marching-cubes resolution"),
        ),
        poor_results=(
            PoorResult("iou", 0.5, "The shape was not recovered",
                       "the mesh is mostly noise. Try more steps (the fast preset's 300 at least), "
                       "or the paper preset on a GPU."),
        ),
    )
)

"""SDF signals: reading clouds and meshes, ground truth, batches, the loss, a small real fit."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trimesh

from model.fit import FitOptions, FitResult, build_model, fit
from model.network import ExpertsLinear
from model.presets import PRESETS
from model.render import expert_colors
from model.signals import kind_of
from model.signals import sdf as sdf_kind
from model.signals.base import Batch, SignalError
from model.signals.sdf import DOMAIN, SdfSignal, level_set, load, mesh, reflect, write_outputs
from tests.utils.data import SPOT

# Small enough for a 1-thread test, same code paths as the paper's 250k / 128^3 / 300k defaults.
SMALL: dict[str, Any] = {
    "surface_samples": 20_000, "pool_size": 20_000, "eval_resolution": 24,
    "chamfer_points": 5_000, "trimap_band": 0.05,  # d = 0.001 catches no point of a 24^3 grid
}
TINY: dict[str, Any] = {"surface_samples": 1_000, "pool_size": 1_000}


@pytest.fixture(scope="module")
def spot_path() -> Path:
    return SPOT


@pytest.fixture(scope="module")
def spot(spot_path: Path) -> SdfSignal:
    return load(spot_path, **SMALL)


def _sphere(n: int, radius: float, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points and outward normals; antipodal pairs, so the mean is exactly the centre."""
    half = np.random.default_rng(0).normal(size=(n // 2, 3))
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    directions = np.concatenate([half, -half])
    return centre + radius * directions, directions


def _write_ply(path: Path, columns: np.ndarray, binary: bool = True) -> Path:
    names = ("x", "y", "z", "nx", "ny", "nz")[: columns.shape[1]]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              f"element vertex {len(columns)}", *(f"property float {n}" for n in names),
              "end_header"]
    rows = columns.astype("<f4")
    body = rows.tobytes() if binary else "".join(
        " ".join(f"{v:.8g}" for v in row) + "\n" for row in rows).encode()
    path.write_bytes(("\n".join(header) + "\n").encode() + body)
    return path


def _write_xyz(path: Path, columns: np.ndarray) -> Path:
    np.savetxt(path, columns, fmt="%.8g")
    return path


def _read_mesh(data: bytes, file_type: str) -> trimesh.Trimesh:
    return trimesh.load_mesh(io.BytesIO(data), file_type=file_type, process=False)


def _vertex_colors(shape: trimesh.Trimesh) -> np.ndarray:
    assert isinstance(shape.visual, trimesh.visual.ColorVisuals) and shape.visual.kind == "vertex"
    colors: np.ndarray = shape.visual.vertex_colors
    return colors


# --------------------------------------------------------------------------- reading


def test_a_mesh_is_sampled_centred_and_scaled(spot: SdfSignal, spot_path: Path) -> None:
    assert kind_of(spot_path).name == "sdf"
    points = spot.sdf_gt.points
    assert np.abs(points.mean(axis=0)).max() < 1e-9
    assert np.abs(points).max() == pytest.approx(1.0)
    assert np.linalg.norm(spot.sdf_gt.normals, axis=1) == pytest.approx(1.0)
    assert spot.meta()["source"] == "mesh" and spot.meta()["points"] == 20_000
    original = trimesh.load_mesh(spot_path, process=False)
    back = points * spot.scale + np.asarray(spot.centre)
    assert np.abs(original.bounds - np.stack([back.min(0), back.max(0)])).max() < 0.02


def test_ground_truth_sign_and_pools(spot: SdfSignal) -> None:
    assert spot.sdf_gt(np.zeros((1, 3)))[0] < 0  # spot's centroid is inside the cow
    corner = np.full((1, 3), 1.15)
    assert spot.sdf_gt(corner)[0] == pytest.approx(
        np.linalg.norm(spot.sdf_gt.points - corner, axis=1).min())
    assert spot.sdf_gt(spot.sdf_gt.points[:50]) == pytest.approx(0.0)
    for pool in (spot.near, spot.far):
        assert pool[:, :3].abs().max() <= sdf_kind.DOMAIN
    assert spot.near[:, 3].abs().median() < 0.01 < spot.far[:, 3].abs().median()
    assert (spot.far[:, 3] < 0).any() and (spot.far[:, 3] > 0).any()


def _exact_volume(signal: SdfSignal, resolution: int) -> np.ndarray:
    return sdf_kind._volume(signal.sdf_gt, resolution)  # an unbounded query at every grid point


def test_the_evaluation_volume_has_the_exact_signs_and_near_values(spot: SdfSignal) -> None:
    truth, exact = sdf_kind.true_volume(spot.sdf_gt, 40), _exact_volume(spot, 40)
    assert np.array_equal(truth < 0, exact < 0)
    near = np.isfinite(truth)
    assert np.array_equal(truth[near], exact[near]) and 0 < near.mean() < 0.5
    assert (truth[~near] < 0).any() and (truth[~near] > 0).any()  # far inside and far outside


def test_a_hole_joining_inside_and_out_is_queried_exactly(tmp_path: Path) -> None:
    """A sphere with a cap cut off: one far region borders inside and outside points alike, so
    no sign is sure and it is queried point by point, as the exact volume is."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    sphere.update_faces(sphere.triangles_center[:, 2] < 0.6)
    sphere.export(tmp_path / "open.obj")
    signal = load(tmp_path / "open.obj", **TINY)
    truth, exact = sdf_kind.true_volume(signal.sdf_gt, 32), _exact_volume(signal, 32)
    assert np.array_equal(truth < 0, exact < 0) and np.isfinite(truth).all()


@pytest.mark.parametrize("name", ["cloud.ply", "ascii.ply", "cloud.txt"])
def test_point_clouds_round_trip(tmp_path: Path, name: str) -> None:
    centre = np.array([1.0, -2.0, 3.0])
    points, normals = _sphere(2_000, 2.0, centre)
    columns = np.hstack([points, normals])
    path = (_write_xyz(tmp_path / name, columns) if name.endswith(".txt")
            else _write_ply(tmp_path / name, columns, binary=name == "cloud.ply"))
    assert kind_of(path).name == "sdf"  # content, not the .txt suffix, decides
    signal = load(path, **TINY)
    assert signal.meta()["source"] == "points" and signal.meta()["points"] == 2_000
    assert signal.centre == pytest.approx(tuple(centre), abs=1e-5)
    assert signal.scale == pytest.approx(np.abs(points - centre).max(), rel=1e-5)
    radius = 2.0 / signal.scale
    assert signal.sdf_gt(np.zeros((1, 3)))[0] == pytest.approx(-radius, abs=0.02)
    assert signal.sdf_gt(np.array([[0.0, 0.0, 1.15]]))[0] == pytest.approx(1.15 - radius, abs=0.02)


@pytest.mark.parametrize("file_type", ["ply", "obj", "off", "stl", "stl_ascii"])
def test_every_mesh_format_is_sniffed_and_sampled(tmp_path: Path, file_type: str) -> None:
    data = trimesh.creation.icosphere(subdivisions=3).export(file_type=file_type)
    path = tmp_path / "shape.bin"  # an unknown suffix: only the content can say what it is
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    assert kind_of(path).name == "sdf"
    signal = load(path, **TINY)
    assert signal.meta()["source"] == "mesh"
    # Inside, about one radius deep (1000 samples leave the centre and scale a few % off).
    assert -1.1 < signal.sdf_gt(np.zeros((1, 3)))[0] < -0.9


def test_an_off_file_of_quads_and_comments_is_read_whole(tmp_path: Path) -> None:
    """A cube of six quads: split into twelve triangles, more faces than its header declares."""
    box = trimesh.creation.box()
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    lines = ["OFF", "# a cube", "8 6 0", *(" ".join(map(str, v)) for v in box.vertices),
             *(f"4 {' '.join(map(str, q))}" for q in quads)]
    path = tmp_path / "cube.off"
    path.write_text("\n".join(lines) + "\n")
    signal = load(path, **TINY)
    assert signal.meta()["source"] == "mesh"
    assert signal.sdf_gt(np.zeros((1, 3)))[0] < 0


@pytest.mark.parametrize("head", [
    b"hello world\nthis is plain text\n",
    b"v is for vendetta\nf is for friday\n",
    b"1,2,3\n4,5,6\n",
    b"1 2 3 4\n5 6 7 8\n",
    b'{"x": 1}\n',
    b"\x89PNG\r\n\x1a\n" + bytes(200),
    b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200),
])
def test_other_files_are_not_claimed(head: bytes) -> None:
    assert not sdf_kind.KIND.sniff(head)


def test_reflect_folds_into_the_domain() -> None:
    x = np.array([1.25, -1.3, 0.5, 3.7, -1.2])
    assert reflect(x) == pytest.approx([1.15, -1.1, 0.5, -1.1, -1.2])


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    points, normals = _sphere(200, 1.0, np.zeros(3))
    cloud = np.hstack([points, normals])
    nan_cloud = cloud.copy()
    nan_cloud[7, 4] = np.nan
    (tmp / "garbage.ply").write_bytes(b"ply\nnot a header at all\n")
    (tmp / "words.obj").write_text("these are words\nnot geometry\n")
    (tmp / "line.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    (tmp / "points.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in points))
    return {
        "undecodable-ply": (tmp / "garbage.ply", {}),
        "undecodable-obj": (tmp / "words.obj", {}),
        "non_finite": (_write_xyz(tmp / "nan.xyz", nan_cloud), {}),
        "too_few_points": (_write_xyz(tmp / "few.xyz", cloud[:50]), {}),
        "too_large-xyz": (_write_xyz(tmp / "big.xyz", cloud), {"max_points": 150}),
        "too_large-ply": (_write_ply(tmp / "big.ply", cloud), {"max_points": 150}),
        "no_normals-xyz": (_write_xyz(tmp / "bare.xyz", points), {}),
        "no_normals-ply": (_write_ply(tmp / "bare.ply", points), {}),
        "no_normals-obj": (tmp / "points.obj", {}),
        "degenerate-mesh": (tmp / "line.obj", {}),
        "degenerate-cloud": (_write_xyz(tmp / "one.xyz", np.tile([[1, 2, 3, 0, 0, 1]], (200, 1))),
                             {}),
        # 0.1 and 0.3 have no exact binary value: the mean of 200 copies is off by ~1e-17.
        "degenerate-inexact": (_write_xyz(tmp / "near.xyz", np.tile([[0.1, 0.2, 0.3, 0, 0, 1]], (200, 1))),
                               {}),
        "invalid_option-protocol": (_write_xyz(tmp / "ok.xyz", cloud), {"protocol": "paper"}),
        "invalid_option-pool": (tmp / "ok.xyz", {"pool_size": 0}),
    }


@pytest.mark.parametrize("case", [
    "undecodable-ply", "undecodable-obj", "non_finite", "too_few_points", "too_large-xyz",
    "too_large-ply", "no_normals-xyz", "no_normals-ply", "no_normals-obj", "degenerate-mesh",
    "degenerate-cloud", "degenerate-inexact", "invalid_option-protocol", "invalid_option-pool",
])
def test_bad_input_is_a_signal_error_with_its_code(tmp_path: Path, case: str) -> None:
    path, options = _bad_inputs(tmp_path)[case]
    with pytest.raises(SignalError) as info:
        sdf_kind.KIND.load(path, **options)  # the kind checks the protocol, then its loader the rest
    assert info.value.code == case.split("-")[0]
    assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)


# --------------------------------------------------------------------------- batches and loss


def test_batches_keep_method_proportions(spot: SdfSignal) -> None:
    gen = torch.Generator().manual_seed(0)
    small = spot.batch(gen, 300)
    assert small.coords.shape == (300, 3) and small.target.shape == (300, 1)
    assert small.n_surface == 100 and torch.all(small.target[:100] == 0)
    assert small.coords.abs().max() <= sdf_kind.DOMAIN
    full = spot.batch(gen, 1 << 30)
    assert full.coords.shape[0] == 30_000 and full.n_surface == 10_000


def test_loss_is_weighted_l1_with_clamping(spot: SdfSignal) -> None:
    batch = Batch(torch.zeros(3, 3), torch.tensor([[0.0], [5.0], [-0.5]]), n_surface=1)
    values = torch.tensor([[0.1, 4.0, -0.5], [-0.2, 2.0, 0.0]])[..., None]  # (K=2, N=3, 1)
    terms = spot.loss(values, torch.zeros(3, 2), batch)  # equal logits: q = 0.5 for both
    # surface: 1000 * mean(0.5 * [0.1, 0.2]); sdf: 1000 * mean(0.5 * [|3 - 3|, 0, |2 - 3|, 0.5])
    assert terms["surface"].item() == pytest.approx(75.0)
    assert terms["sdf"].item() == pytest.approx(187.5)
    assert terms["loss"].item() == pytest.approx(262.5)
    first = torch.tensor([[1.0, 0.0]] * 3)  # argmax picks the first expert: |0.1| + |4 - 5| + 0
    assert spot.progress_metric(values, first, batch) == pytest.approx(1.1 / 3)


# --------------------------------------------------------------------------- a small real fit


@pytest.fixture(scope="module")
def fitted(spot: SdfSignal, tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    # The fast preset's schedule with 5 pretraining steps and 600-point batches: seconds.
    tiny = replace(PRESETS["fast"], pretrain_steps=5, pretrain_max_points=2048, batch_points=600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "test-sdf", tiny)
        return fit(spot, FitOptions(preset="test-sdf", steps=40, device="cpu"),
                   cache_dir=tmp_path_factory.mktemp("sdf-pretrain"))


def test_a_small_fit_gives_finite_metrics(fitted: FitResult) -> None:
    assert fitted.config["parameters"] == 323_472  # the paper's small 3D model (fast preset)
    assert set(fitted.metrics) == {"iou", "trimap_iou", "chamfer"}
    assert all(math.isfinite(v) for v in fitted.metrics.values()), fitted.metrics
    assert 0 < fitted.metrics["iou"] <= 1 and 0 < fitted.metrics["trimap_iou"] <= 1


def test_mesh_output_loads_with_expert_colours(fitted: FitResult) -> None:
    meta = fitted.config["signal"]
    out = mesh(fitted.model, meta, resolution=24, experts=True)
    assert out.suffix == ".ply"
    shape = _read_mesh(out.data, "ply")
    assert len(shape.vertices) > 0
    palette = {tuple(c) for c in expert_colors(np.arange(fitted.model.n_experts))}
    assert {tuple(c[:3]) for c in _vertex_colors(shape)} <= palette
    glb = _read_mesh(mesh(fitted.model, meta, 24, "glb").data, "glb")
    assert len(glb.vertices) == len(shape.vertices)


def test_mesh_output_maps_back_to_the_original_frame(fitted: FitResult) -> None:
    meta = fitted.config["signal"]
    normalised, original = (
        _read_mesh(mesh(fitted.model, meta, 24, "obj", original_frame=frame).data, "obj").vertices
        for frame in (False, True)
    )
    assert original == pytest.approx(normalised * meta["scale"] + np.asarray(meta["centre"]),
                                     abs=1e-5)


def test_write_outputs_writes_both_meshes(fitted: FitResult, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdf_kind, "OUTPUT_RESOLUTION", 24)
    written = write_outputs(fitted.model, fitted.config["signal"], tmp_path)
    assert [p.name for p in written] == ["mesh.ply", "experts.ply"]
    plain, coloured = (_read_mesh(p.read_bytes(), "ply") for p in written)
    assert len(plain.vertices) == len(coloured.vertices) > 0
    assert len(_vertex_colors(coloured)) == len(coloured.vertices)


@pytest.mark.parametrize("query", [{"resolution": 8}, {"resolution": 4096}, {"format": "stl"}])
def test_mesh_rejects_bad_queries(fitted: FitResult, query: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        mesh(fitted.model, fitted.config["signal"], **query)


def test_pieces_cut_by_the_domain_walls_are_dropped() -> None:
    # A sphere (the shape) and a ball centred on the domain's corner, as a short fit leaves the
    # SDF negative there: the wall cuts the second open, so the surface keeps the sphere alone.
    axis = np.linspace(-DOMAIN, DOMAIN, 64)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    sphere = np.sqrt(x**2 + y**2 + z**2) - 0.5
    corner = np.sqrt((x - DOMAIN) ** 2 + (y - DOMAIN) ** 2 + (z - DOMAIN) ** 2) - 0.3
    surface = level_set(np.minimum(sphere, corner).astype(np.float32))
    assert surface is not None and surface.is_watertight
    assert np.allclose(surface.bounds, [[-0.5] * 3, [0.5] * 3], atol=0.02)
    # A surface that only the walls bound is all there is: it stays.
    slab = level_set((np.abs(z) - 0.3).astype(np.float32))
    assert slab is not None and len(slab.faces) > 0 and not slab.is_watertight


def test_an_empty_level_set_is_reported(spot: SdfSignal, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdf_kind, "OUTPUT_RESOLUTION", 16)
    model = build_model(spot, FitOptions()).eval()
    last = model.experts.layers[-1]
    assert isinstance(last, ExpertsLinear)
    with torch.no_grad():  # every expert outputs +1 everywhere: no surface anywhere
        last.weight.zero_()
        last.bias.fill_(1.0)
    with pytest.raises(ValueError, match="no zero level set"):
        mesh(model, spot.meta(), resolution=16)
    assert write_outputs(model, spot.meta(), tmp_path) == []
    metrics = spot.evaluate(model)
    assert metrics["chamfer"] == math.inf and metrics["iou"] == 0.0

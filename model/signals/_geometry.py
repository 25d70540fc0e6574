"""Reading 3D shape files for the sdf kind: content sniffing, decoding, oriented points.

Formats: PLY (point cloud with nx ny nz, or mesh), XYZ text (x y z nx ny nz per line), and
OBJ / OFF / STL meshes. Every problem with a file is a SignalError with a stable code.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from trimesh.exchange.ply import load_ply

from model.signals.base import SignalError

MIN_POINTS = 100  # fewer points cannot describe a surface worth fitting
MAX_POINTS = 5_000_000  # default input cap: ~120 MB of float64 points plus normals and KD-tree
SURFACE_SAMPLES = 250_000  # points drawn on a mesh: near the Chamfer's 300k (docs/method.md#3d-shapes)
SNIFF_BYTES = 4096  # as model.signals.kind_of: enough lines to judge a text format
SUFFIX_FORMATS = {".ply": "ply", ".xyz": "xyz", ".obj": "obj", ".off": "off", ".stl": "stl"}
OBJ_KEYWORDS = {"v", "vt", "vn", "vp", "f", "l", "p", "o", "g", "s", "mtllib", "usemtl"}

# --------------------------------------------------------------------------- sniffing


def _text_lines(head: bytes) -> list[list[str]]:
    """Tokens of each non-empty line; a last line cut off by the sniff window is dropped."""
    lines = head.decode("latin-1").split("\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the head may end mid-line: judge only complete lines
    return [line.split() for line in lines if line.strip()]


def _numbers(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return True


def _is_obj(head: bytes) -> bool:
    # Every line a known OBJ statement and at least one numeric vertex: random text fails both.
    lines = _text_lines(head)
    known = all(t[0].startswith("#") or t[0] in OBJ_KEYWORDS for t in lines)
    return known and any(t[0] == "v" and len(t) >= 4 and _numbers(t[1:4]) for t in lines)


def _is_xyz(head: bytes) -> bool:
    # Every line the same count of numbers: 6 (with normals) or 3 (refused later: no normals).
    lines = _text_lines(head)
    widths = {len(t) for t in lines}
    return len(widths) == 1 and widths <= {3, 6} and all(_numbers(t) for t in lines)


def _is_binary_stl(head: bytes) -> bool:
    """80-byte header, uint32 count, 50-byte records of 12 float32 (unit normal, 3 vertices)."""
    records = (len(head) - 84) // 50
    if records < 1 or int.from_bytes(head[80:84], "little") < 1:
        return False
    dtype = np.dtype([("data", "<f4", (12,)), ("attribute", "<u2")])
    data = np.frombuffer(head[84 : 84 + 50 * records], dtype)["data"]
    if not np.isfinite(data).all():
        return False
    # In float64: squares of float32 noise or text overflow, a RuntimeWarning on the CLI's stderr.
    length = np.linalg.norm(data[:, :3].astype(np.float64), axis=1)
    # Exporters write unit normals (or zeros); an image or text read this way almost never does.
    unit = np.abs(length - 1) < 1e-3
    return bool((unit | (length == 0)).all() and unit.any())


def _format_of(head: bytes) -> str | None:
    if head.startswith((b"ply\n", b"ply\r\n")):
        return "ply"
    stripped = head.lstrip()
    if stripped.startswith(b"OFF") and stripped[3:4] in (b"", b"\n", b"\r", b" ", b"\t"):
        return "off"
    if stripped.startswith(b"solid") and b"facet" in head:
        return "stl"
    if _is_obj(head):
        return "obj"
    if _is_xyz(head):
        return "xyz"
    return "stl" if _is_binary_stl(head) else None


def sniff(head: bytes) -> str | None:
    """The suffix of the format (".ply"...) the head of a file looks like, or None."""
    fmt = _format_of(head)
    return None if fmt is None else f".{fmt}"


# --------------------------------------------------------------------------- reading


@dataclass
class Geometry:
    """What a file holds: vertices (V, 3), and faces (F, 3) for a mesh or normals for points."""

    vertices: np.ndarray
    faces: np.ndarray | None = None
    normals: np.ndarray | None = None


def _read_xyz(path: Path, max_points: int) -> Geometry:
    # max_rows bounds memory: one row past the cap is enough to refuse the file.
    with warnings.catch_warnings():
        # A file of blank lines warns "input contained no data"; it is refused below, in words.
        warnings.simplefilter("ignore", UserWarning)
        data = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#", max_rows=max_points + 1)
    if data.shape[0] and data.shape[1] not in (3, 6):
        raise ValueError(f"{data.shape[1]} numbers per line (expected x y z nx ny nz)")
    return Geometry(data[:, :3], normals=data[:, 3:6] if data.shape[1] == 6 else None)


def _read_ply(path: Path, head: bytes, max_points: int) -> Geometry:
    declared = re.search(rb"element vertex (\d+)", head)
    if declared and int(declared.group(1)) > max_points:  # refuse before decoding the body
        raise SignalError(f"{path.name}: {int(declared.group(1)):,} points is over the "
                          f"{max_points:,}-point cap", "too_large")
    with path.open("rb") as f:
        kwargs = load_ply(f)
    vertices = np.asarray(kwargs.get("vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = kwargs.get("faces")
    _check_counts(head, {"vertex": len(vertices), "face": 0 if faces is None else len(faces)})
    if faces is not None and len(faces):
        # Through Trimesh so quads are split into triangles.
        faces = trimesh.Trimesh(vertices, faces, process=False).faces
    normals = kwargs.get("vertex_normals")
    return Geometry(vertices, faces if faces is not None and len(faces) else None,
                    None if normals is None else np.asarray(normals, dtype=np.float64))


def _check_counts(head: bytes, held: dict[str, int]) -> None:
    """An ASCII PLY cut short still parses, into part of the shape: compare with its header."""
    for element, count in held.items():
        declared = re.search(rb"element " + element.encode() + rb" (\d+)", head)
        if declared and int(declared.group(1)) != count:
            raise ValueError(f"the header declares {int(declared.group(1)):,} {element} rows, the "
                             f"file holds {count:,}: is it truncated?")


def _check_off_counts(head: bytes, geometry: Geometry) -> None:
    """An OFF file cut short still parses, into part of the shape: its header says how much."""
    lines = (line.split(b"#")[0].strip() for line in head.splitlines())
    tokens = b" ".join(line for line in lines if line).split()[1:4]  # after "OFF": V F E
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens[:2]):
        raise ValueError("the header has no vertex and face counts")
    vertices, faces = int(tokens[0]), int(tokens[1])
    held_faces = 0 if geometry.faces is None else len(geometry.faces)
    # Polygons are split into triangles, so a whole file holds at least the declared faces.
    if len(geometry.vertices) != vertices or held_faces < faces:
        raise ValueError(f"the header declares {vertices:,} vertices and {faces:,} faces, the "
                         f"file holds {len(geometry.vertices):,} and {held_faces:,}: is it truncated?")


def _read_trimesh(path: Path, fmt: str) -> Geometry:
    loaded: Any = trimesh.load(path, file_type=fmt, process=False)  # Trimesh, PointCloud or Scene
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_geometry()
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = getattr(loaded, "faces", None)
    return Geometry(vertices, faces if faces is not None and len(faces) else None)


def read_geometry(path: Path, max_points: int = MAX_POINTS) -> Geometry:
    """Decode a file by its content (its suffix only when the content is not recognised)."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise SignalError(f"cannot read {path.name}: {e.strerror}", "unreadable") from e
    fmt = _format_of(head) or SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SignalError(f"{path.name}: not a point cloud or mesh file", "undecodable")
    try:
        if fmt == "xyz":
            geometry = _read_xyz(path, max_points)
        elif fmt == "ply":
            geometry = _read_ply(path, head, max_points)
        else:
            geometry = _read_trimesh(path, fmt)
            if fmt == "off":
                _check_off_counts(head, geometry)
        faces = geometry.faces
        if faces is not None and not 0 <= faces.min() <= faces.max() < len(geometry.vertices):
            raise ValueError("a face refers to a missing vertex")
    except SignalError:
        raise
    except Exception as e:  # trimesh's parsers raise anything from IndexError to KeyError
        # One line, and never the server-side path a parser may have put in its message.
        reason = (str(e).splitlines() or [type(e).__name__])[0].replace(str(path), path.name)
        raise SignalError(f"{path.name}: not a readable {fmt.upper()} file ({reason})",
                          "undecodable") from e
    if len(geometry.vertices) == 0:
        raise SignalError(f"{path.name}: no points found in this {fmt.upper()} file", "undecodable")
    return geometry


def oriented_points(geometry: Geometry, name: str, max_points: int = MAX_POINTS,
                    surface_samples: int = SURFACE_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3), unit normals (N, 3)): the input cloud, or samples on the mesh faces."""
    vertices, normals = geometry.vertices, geometry.normals
    if len(vertices) > max_points:
        raise SignalError(f"{name}: {len(vertices):,} points is over the {max_points:,}-point cap",
                          "too_large")
    if not np.isfinite(vertices).all() or (normals is not None and not np.isfinite(normals).all()):
        raise SignalError(f"{name}: coordinates or normals contain NaN or infinity", "non_finite")
    if geometry.faces is not None:
        return _sample_mesh(trimesh.Trimesh(vertices, geometry.faces, process=False), name,
                            surface_samples)
    if normals is None:
        raise SignalError(f"{name}: a point cloud needs normals (PLY nx ny nz, or XYZ "
                          "x y z nx ny nz) for the sign of the distance", "no_normals")
    length = np.linalg.norm(normals, axis=1)
    keep = length > 0  # a zero normal gives no side; such points are dropped, not guessed
    if not keep.any():
        raise SignalError(f"{name}: every normal is zero", "no_normals")
    if keep.sum() < MIN_POINTS:
        raise SignalError(f"{name}: {int(keep.sum())} oriented points; at least {MIN_POINTS} "
                          "are needed", "too_few_points")
    return vertices[keep], normals[keep] / length[keep, None]


def _sample_mesh(mesh: trimesh.Trimesh, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    if extent == 0 or not mesh.area > 1e-12 * extent**2:  # relative: collinear faces leave ~1e-17
        raise SignalError(f"{name}: the mesh has no surface area", "degenerate")
    points, faces = trimesh.sample.sample_surface(mesh, count, seed=0)
    return np.asarray(points), np.asarray(mesh.face_normals[faces])


def normalise(points: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """docs/method.md#3d-shapes: centre at the mean, divide by max |coordinate|.

    -> (points, centre, scale)."""
    # By the spread, not by the centred points: a mean of equal floats can miss them by ~1e-17,
    # and dividing by that would blow rounding noise up to a "shape".
    if float(np.ptp(points, axis=0).max()) <= 1e-9 * float(np.abs(points).max()):
        raise SignalError(f"{name}: every point is the same point", "degenerate")
    centre = points.mean(axis=0)
    centred = points - centre
    scale = float(np.abs(centred).max())
    return centred / scale, centre, scale

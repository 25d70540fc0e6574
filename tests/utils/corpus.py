"""Malformed input files, built by code (no binary blobs in the repository).

Each entry is a file a client might send by mistake or on purpose: truncated, lying headers,
decompression bombs, wrong magic bytes, non-finite values. Every one must be refused cleanly:
by the API with a 4xx problem carrying `code`, by `nexp fit` with exit status 2 and one line.
Files stay under the test service's caps (tests/service/conftest.py: 1 MiB uploads, 512x512
images, 1 s of audio) unless exceeding a cap is the point, so both give the same code.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import trimesh
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RATE = 8000  # audio entries: 1000 samples are 0.125 s, under every duration cap


@dataclass(frozen=True)
class BadFile:
    filename: str
    """As uploaded: the extension is the fallback when the content is not recognised."""
    build: Callable[[], bytes]
    code: str
    """The SignalError code, which the API returns as the problem's `code`."""
    status: int
    """The API's answer: 413 over a cap, 415 an unknown or refused format, else 422."""

    def write(self, folder: Path) -> Path:
        path = folder / self.filename
        path.write_bytes(self.build())
        return path


# --------------------------------------------------------------------------- images


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def _ihdr(width: int, height: int) -> bytes:
    return struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB


def _image(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    """Noise, so the file does not compress to nothing and a cut lands in pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png_after_ihdr(*chunks: bytes) -> bytes:
    """A real PNG with chunks inserted after its header chunk (8 magic + 25 IHDR bytes)."""
    png = _image("PNG")
    return png[:33] + b"".join(chunks) + png[33:]


def _bilevel_png(side: int) -> bytes:
    """side x side one-bit pixels: a few kilobytes that decode to side^2 pixels."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """Start of image, a frame header (SOF0) with this size and 3 components, end of image."""
    components = b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + components
    return b"\xff\xd8" + sof + b"\xff\xd9"


IMAGES = {
    "png truncated": BadFile("cut.png", lambda: _half(_image("PNG")), "undecodable", 422),
    "jpeg truncated": BadFile("cut.jpg", lambda: _half(_image("JPEG")), "undecodable", 422),
    "png with wrong magic": BadFile("magic.png", lambda: b"\x89PNX" + _image("PNG")[4:],
                                    "undecodable", 422),
    "png header with a bad checksum": BadFile(
        "crc.png", lambda: PNG_MAGIC + _png_chunk(b"IHDR", _ihdr(64, 64), crc=0) + _image("PNG")[33:],
        "undecodable", 422),
    "png header claiming 10^10 pixels": BadFile(
        "bomb-header.png",
        lambda: PNG_MAGIC + _png_chunk(b"IHDR", _ihdr(100_000, 100_000))
        + _png_chunk(b"IDAT", zlib.compress(bytes(100))) + _png_chunk(b"IEND", b""),
        "too_large", 413),
    "png decompression bomb": BadFile("bomb.png", lambda: _bilevel_png(8000), "too_large", 413),
    "png chunk claiming 2 GB": BadFile(
        "chunk.png", lambda: PNG_MAGIC + struct.pack(">I", 0x7FFF_FFF0) + b"IHDR" + bytes(20),
        "undecodable", 422),
    "png text chunk bomb": BadFile(
        "text-bomb.png",  # 20 MB of text in 20 kB: Pillow's MAX_TEXT_CHUNK refuses it
        lambda: _png_after_ihdr(_png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * (20 << 20), 9))),
        "undecodable", 422),
    "jpeg claiming 65535x65535": BadFile("huge.jpg", lambda: _jpeg_claiming(65535, 65535),
                                         "too_large", 413),
    "png of one pixel": BadFile("dot.png", lambda: _image("PNG", (1, 1)), "too_small", 422),
    "text named .png": BadFile("notes.png", lambda: b"hello, world\n" * 50, "undecodable", 422),
    "gif named .png": BadFile("anim.png", lambda: _image("GIF"), "unsupported_type", 415),
    "webp magic and garbage": BadFile("junk.webp", lambda: b"RIFF\x24\0\0\0WEBPVP8 " + bytes(100),
                                      "undecodable", 422),
}

# --------------------------------------------------------------------------- audio


def _wav_header(channels: int, rate: int, data_bytes: int, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM WAV header; fields too large for their bytes wrap around."""
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFF_FFFF, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFF_FFFF) + b"WAVE"
            + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes))


def _tone(samples: int = 1000) -> np.ndarray:
    return (0.3 * np.sin(np.arange(samples) / 5.0)).astype(np.float32)


def _pcm16(samples: np.ndarray) -> bytes:
    return (samples * 32767).astype("<i2").tobytes()


def _encoded(samples: np.ndarray, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, RATE, format=fmt, subtype=subtype)
    return buf.getvalue()


def _poisoned(samples: np.ndarray) -> np.ndarray:
    samples = samples.copy()
    samples[10], samples[20] = np.nan, np.inf
    return samples


AUDIO = {
    "wav header only": BadFile("header.wav", lambda: _wav_header(1, RATE, 2000), "empty_audio", 422),
    "wav claiming 1 GB of data": BadFile("liar.wav", lambda: _wav_header(1, RATE, 10**9) + b"\0",
                                         "empty_audio", 422),
    "wav with 65535 channels": BadFile(
        "channels.wav", lambda: _wav_header(65535, RATE, 2000) + _pcm16(_tone()), "undecodable", 422),
    "wav at 1 GHz": BadFile("rate.wav", lambda: _wav_header(1, 10**9, 2000) + _pcm16(_tone()),
                            "unsupported_sample_rate", 422),
    "wav at 0 Hz": BadFile("zero-rate.wav", lambda: _wav_header(1, 0, 2000) + _pcm16(_tone()),
                           "undecodable", 422),
    "wav format chunk claiming 4 GB": BadFile(
        "fmt.wav", lambda: b"RIFF\x64\0\0\0WAVEfmt " + struct.pack("<I", 0xFFFF_FFF0) + bytes(64),
        "undecodable", 422),
    "float wav with NaN and inf": BadFile(
        "nan.wav", lambda: _encoded(_poisoned(_tone()), "WAV", "FLOAT"), "non_finite", 422),
    "silent wav": BadFile("silence.wav", lambda: _encoded(np.zeros(1000, np.float32), "WAV"),
                          "empty_audio", 422),
    "flac truncated": BadFile("cut.flac", lambda: _half(_encoded(_tone(4000), "FLAC")),
                              "undecodable", 422),
    "flac magic and garbage": BadFile("junk.flac", lambda: b"fLaC" + bytes(range(256)) * 4,
                                      "undecodable", 422),
    "aiff named .wav": BadFile("aiff.wav", lambda: _encoded(_tone(), "AIFF"), "unsupported_type", 415),
}

# --------------------------------------------------------------------------- 3D shapes


def _sphere_rows(count: int = 300) -> np.ndarray:
    """An oriented point cloud: (count, 6) rows x y z nx ny nz on a sphere of radius 0.8."""
    normals = np.random.default_rng(0).normal(size=(count, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.hstack([0.8 * normals, normals])


def _ply_header(fmt: str, vertices: int, props: str = "x y z nx ny nz", faces: int = 0) -> bytes:
    lines = [f"format {fmt} 1.0", f"element vertex {vertices}"]
    lines += [f"property float {p}" for p in props.split()]
    if faces:
        lines += [f"element face {faces}", "property list uchar int vertex_indices"]
    return ("ply\n" + "\n".join(lines) + "\nend_header\n").encode()


def _ascii_rows(rows: np.ndarray) -> bytes:
    return "".join(" ".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


def _ply_points(rows: np.ndarray, declared: int | None = None) -> bytes:
    """An ASCII PLY of (N, 3) or (N, 6) rows, its header declaring `declared` vertices."""
    header = _ply_header("ascii", len(rows) if declared is None else declared,
                         "x y z nx ny nz" if rows.shape[1] == 6 else "x y z")
    return header + _ascii_rows(rows)


def _sphere_mesh(fmt: str, encoding: str | None = None) -> bytes:
    mesh = trimesh.creation.icosphere(subdivisions=2)
    data = mesh.export(file_type=fmt, **({"encoding": encoding} if encoding else {}))
    return data if isinstance(data, bytes) else data.encode()


def _nan_rows() -> np.ndarray:
    rows = _sphere_rows()
    rows[5, 1] = np.nan
    return rows


TETRAHEDRON = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"

SHAPES = {
    "ply binary truncated": BadFile("cut.ply", lambda: _half(_sphere_mesh("ply")), "undecodable", 422),
    "ply ascii truncated in its faces": BadFile(
        "cut-faces.ply", lambda: _sphere_mesh("ply", "ascii")[:-2000], "undecodable", 422),
    "off truncated in its faces": BadFile(
        "cut-faces.off", lambda: _sphere_mesh("off")[:-2000], "undecodable", 422),
    "ply claiming 10^9 vertices": BadFile(
        "billion.ply", lambda: _ply_points(_sphere_rows(10), declared=10**9), "too_large", 413),
    "ply with NaN coordinates": BadFile("nan.ply", lambda: _ply_points(_nan_rows()),
                                        "non_finite", 422),
    "ply points without normals": BadFile(
        "bare.ply", lambda: _ply_points(_sphere_rows()[:, :3]), "no_normals", 422),
    "ply ascii with garbage": BadFile(
        "garbage.ply", lambda: _ply_header("ascii", 5, "x") + b"not numbers\n", "undecodable", 422),
    "ply header that never ends": BadFile(
        "endless.ply", lambda: b"ply\nformat ascii 1.0\n" + b"comment padding\n" * 50_000,
        "undecodable", 422),
    "ply face of a missing vertex": BadFile(
        "face.ply", lambda: _ply_header("ascii", 4, "x y z", faces=1)
        + _ascii_rows(np.eye(4, 3)) + b"3 0 1 99\n", "undecodable", 422),
    "obj with NaN vertices": BadFile(
        "nan.obj", lambda: (TETRAHEDRON + "v nan 0 0\nf 1 2 3\nf 1 2 5\nf 1 3 4\n").encode(),
        "non_finite", 422),
    "obj face of a missing vertex": BadFile(
        "face.obj", lambda: (TETRAHEDRON + "f 1 2 3\nf 1 2 40\n").encode(), "undecodable", 422),
    "obj without faces or normals": BadFile("cloud.obj", lambda: (TETRAHEDRON * 50).encode(),
                                            "no_normals", 422),
    "obj of collinear points": BadFile(
        "flat.obj", lambda: b"v 0 0 0\nv 1 1 1\nv 2 2 2\nf 1 2 3\n", "degenerate", 422),
    "obj of comments only": BadFile("comments.obj", lambda: b"# nothing here\n" * 10,
                                    "undecodable", 422),
    "xyz with too few points": BadFile("few.xyz", lambda: _ascii_rows(_sphere_rows(20)),
                                       "too_few_points", 422),
    "xyz of blank lines": BadFile("blank.xyz", lambda: b"\n \n\t\n", "undecodable", 422),
    "stl claiming 10^9 triangles": BadFile(
        "liar.stl",
        lambda: bytes(80) + struct.pack("<I", 10**9) + struct.pack("<12fH", 0, 0, 1, *[0] * 9, 0),
        "undecodable", 422),
}

# --------------------------------------------------------------------------- any kind

OTHERS = {
    "empty .png": BadFile("empty.png", lambda: b"", "empty_file", 422),
    "empty .wav": BadFile("empty.wav", lambda: b"", "empty_file", 422),
    "random bytes": BadFile("noise.bin", lambda: np.random.default_rng(0).bytes(4096),
                            "unsupported_type", 415),
    "random bytes named .ply": BadFile("noise.ply", lambda: np.random.default_rng(1).bytes(4096),
                                       "undecodable", 422),
}

CORPUS: dict[str, BadFile] = {**IMAGES, **AUDIO, **SHAPES, **OTHERS}

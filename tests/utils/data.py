"""The small real signals kept in the repository, under tests/data (its README.md names each
file's source, cut and licence). The folder is laid out as the benchmarks' data folder
(bench/data.py), so a benchmark dry run reads it too."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "data"
KODIM19 = DATA / "images" / "kodak" / "kodim19.png"  # the whole published file
BACH = DATA / "audio" / "gt_bach.wav"  # 2 s from 2 s into the recording, mono float
TWO_SPEAKERS = DATA / "audio" / "gt_twospeakers.wav"  # 2 s, stereo int16
SPOT = DATA / "meshes" / "spot.obj"  # the whole published file


def kodim19_crop(path: Path, box: tuple[int, int, int, int]) -> Path:
    """`box` (left, top, right, bottom) of kodim19 downscaled by 4 with Lanczos, the paper's
    protocol before its centre crop, saved as a PNG at `path`."""
    with Image.open(KODIM19) as img:
        img.resize((img.width // 4, img.height // 4), Image.Resampling.LANCZOS).crop(box).save(path)
    return path

"""Output helpers shared by every signal kind: rendered bytes and expert colours."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# A qualitative palette (Tableau 10, then Set3-like tints) so neighbouring experts stand apart.
_PALETTE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
        [141, 211, 199], [255, 255, 179], [190, 186, 218], [251, 128, 114], [128, 177, 211],
        [253, 180, 98],
    ],
    dtype=np.uint8,
)


def expert_colors(ids: np.ndarray) -> np.ndarray:
    """RGB uint8 colour per expert id, (...,) -> (..., 3); ids past the palette wrap around."""
    return _PALETTE[np.asarray(ids) % len(_PALETTE)]


@dataclass(frozen=True)
class Rendered:
    """An output ready to send or save."""

    data: bytes
    media_type: str
    suffix: str


def png(pixels: np.ndarray) -> Rendered:
    """uint8 (H, W) or (H, W, 3) -> PNG."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return Rendered(buf.getvalue(), "image/png", ".png")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values on [-1, 1] -> uint8 on [0, 255], clipped."""
    return np.clip(np.rint((values + 1.0) * 127.5), 0, 255).astype(np.uint8)

"""Output helpers shared by every signal kind: rendered bytes, expert colours, and a way to stop
a render between two chunks of its routed inference."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import nn

from model.network import NeuralExperts

# Okabe & Ito's eight colours, told apart with any colour vision and ordered so that neighbours
# differ in lightness as well as hue; experts 8 to 15 get the same hues half-way to white. The
# page (api/static/colors.js) names experts by these exact colours.
_OKABE_ITO = np.array(
    [[0, 114, 178], [230, 159, 0], [86, 180, 233], [213, 94, 0],
     [0, 158, 115], [240, 228, 66], [204, 121, 167], [0, 0, 0]],
    dtype=np.uint16,
)
_PALETTE = np.concatenate([_OKABE_ITO, np.rint((_OKABE_ITO + 255) / 2)]).astype(np.uint8)


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


# Per thread (and task): renders of one shared model run in several threads at once, each with
# a check of its own.
_stop_check: ContextVar[Callable[[], None] | None] = ContextVar("render_stop_check", default=None)


@contextmanager
def stop_check(check: Callable[[], None]) -> Iterator[None]:
    """Inside the block, routed inference on this thread calls `check` before each chunk of
    points of a `stoppable` model; `check` raises to end the render there."""
    token = _stop_check.set(check)
    try:
        yield
    finally:
        _stop_check.reset(token)


def stoppable(model: NeuralExperts) -> NeuralExperts:
    """`model`, honouring `stop_check`. NeuralExperts.predict (and predict_dense) runs the expert
    encoder once per chunk, and every output renders through them, so a hook before the encoder
    runs between chunks whichever kind and output is rendering."""
    model.expert_encoder.register_forward_pre_hook(_run_stop_check)
    return model


def _run_stop_check(_encoder: nn.Module, _inputs: tuple[object, ...]) -> None:
    check = _stop_check.get()
    if check is not None:
        check()

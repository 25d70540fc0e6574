"""Signal kinds, one module each, found by discovery so a new kind is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from model.signals.base import (
    Batch,
    Cap,
    Grid,
    Option,
    Output,
    Signal,
    SignalError,
    SignalKind,
    kinds,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

SNIFF_BYTES = 4096


def kind_of(path: Path) -> SignalKind:
    """The kind of a file, from its content first and its extension second."""
    return identify(path)[0]


def identify(path: Path) -> tuple[SignalKind, str]:
    """The kind of a file and the suffix its format goes by (".png"), from its content first and
    its extension second: a JPEG uploaded as photo.html is (image, ".jpg")."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise SignalError(f"cannot read {path.name}: {e.strerror}", "unreadable") from e
    if not head:
        raise SignalError(f"{path.name} is empty", "empty_file")
    for kind in kinds().values():
        suffix = kind.sniff(head)
        if suffix is not None:
            return kind, suffix
    suffix = path.suffix.lower()
    for kind in kinds().values():
        if suffix in kind.suffixes:
            return kind, suffix
    known = sorted(s for k in kinds().values() for s in k.suffixes)
    raise SignalError(
        f"{path.name}: unknown file type (supported: {', '.join(known)})", "unsupported_type"
    )


def load_signal(path: Path, **options: Any) -> Signal:
    return kind_of(path).load(path, **options)


__all__ = ["Batch", "Cap", "Grid", "Option", "Output", "Signal", "SignalError", "SignalKind",
           "identify", "kind_of", "kinds", "load_signal"]

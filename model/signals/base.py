"""The contract between a signal kind and the rest of model/.

A signal kind is one file in this package that defines a `SignalKind` and registers it with
`register`. `fit.py`, `render.py` and the CLI know only this protocol, so adding a kind (or
changing how one is read) touches that one file and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from model.network import NeuralExperts


class SignalError(ValueError):
    """The input cannot be used as a signal (unreadable, empty, non-finite, too large...).

    `code` is a stable machine-readable reason that the CLI prints and the API returns.
    """

    def __init__(self, detail: str, code: str = "invalid_signal") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Grid:
    """A regular grid of coordinates: `shape` cells spanning [low, high] on every axis.

    Images and audio are fitted on exactly their grid of samples; SDF manager pretraining uses
    a 64^3 grid of cells over the domain.
    """

    shape: tuple[int, ...]
    low: float
    high: float

    def coords(self, device: torch.device | str = "cpu") -> Tensor:
        """Row-major coordinates of every cell: (prod(shape), len(shape)), first axis first."""
        axes = [torch.linspace(self.low, self.high, n, device=device) for n in self.shape]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


@dataclass
class Batch:
    """One training batch. For SDF the first `n_surface` rows are on-surface points."""

    coords: Tensor  # (N, in_dim)
    target: Tensor  # (N, out_dim)
    n_surface: int = 0


class Signal(Protocol):
    """A loaded signal, ready to fit."""

    kind: str
    task: str  # architecture family in model.presets ("image", "audio", "sdf")
    in_dim: int
    grid: Grid  # pretraining grid (the sample grid for images and audio)

    @property
    def out_dim(self) -> int: ...

    def meta(self) -> dict[str, Any]:
        """JSON-able facts a checkpoint needs to render this signal without it."""
        ...

    def batch(self, generator: torch.Generator, max_points: int) -> Batch:
        """A training batch on the signal's device (full batch when it fits in max_points)."""
        ...

    def grid_values(self) -> Tensor | None:
        """Target values on `grid` (for k-means pretraining), or None where that has no meaning."""
        ...

    def loss(self, values: Tensor, logits: Tensor | None, batch: Batch) -> dict[str, Tensor]:
        """Named loss terms; "loss" is the total. values: (K, N, C), logits: (N, K)."""
        ...

    def progress_metric(self, values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        """A cheap quality number for progress reports, from a training forward."""
        ...

    def evaluate(self, model: NeuralExperts) -> dict[str, float]:
        """The final metrics (metrics.json) from routed predictions."""
        ...


@dataclass(frozen=True)
class Cap:
    """A size limit the service sets per deployment, as plain data: service/settings.py makes a
    setting of it, named after `setting`, with this default and description.

    It bounds one of three things: a keyword of the kind's `load` (`load_option`), a render option
    (an `Option.cap` names it), or a measure of a whole render (`measure`)."""

    setting: str
    default: int | float
    description: str
    load_option: str | None = None
    measure: Callable[[dict[str, Any], dict[str, Any]], tuple[float, str]] | None = None
    """measure(query, meta) -> (size, how to say it) of one render, e.g. (65536, "65,536 pixels")."""
    shrink: Callable[[dict[str, Any], dict[str, Any], float], dict[str, Any]] | None = None
    """shrink(query, meta, limit) -> the query with what the client left out (an image's size:
    the input's own) chosen to measure within `limit`: a default never bypasses the cap."""


@dataclass(frozen=True)
class Option:
    """One keyword of a renderer, as plain data: api/ makes a query parameter of it and
    `nexp render` a command-line option."""

    name: str
    type: type[int | float | bool | str]
    description: str
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    cap: str | None = None
    """The `Cap.setting` bounding it. Left out by a client, the service asks for the renderer's
    default or the cap, whichever is lower: a default never bypasses the cap."""
    cli: bool = True
    """Offered by `nexp render` (with `from_suffix`, filled from the output file's extension)."""
    from_suffix: bool = False


@dataclass(frozen=True)
class Output:
    """A named render of a fitted model: what it is, what it returns, the options it takes."""

    render: Callable[..., Any]
    """render(model, meta, **options) -> model.render.Rendered; ValueError on a bad option."""
    summary: str
    media_types: tuple[str, ...]
    options: tuple[Option, ...] = ()
    suffixes: tuple[str, ...] = ()
    """The extensions `nexp render -o` may write it under."""

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)


@dataclass(frozen=True)
class PoorResult:
    """A final metric below which a fit failed though its job succeeded (it ran to the end): the
    page says so, as "`problem` (metric value, under `below`): `advice`"."""

    metric: str
    """A key of `evaluate`'s metrics."""
    below: float
    problem: str
    """What went wrong, as a sentence's start: "The shape was not recovered"."""
    advice: str
    """What the result looks like and what to try, after the numbers."""


@dataclass(frozen=True)
class SignalKind:
    """Everything model/ knows about one kind of signal, and what it declares to the service and
    the page as plain data (media types, caps, outputs with their options, run-time cost, the
    results too poor to keep)."""

    name: str
    label: str
    """What a person calls it (the page, the API docs): "3D shape" for sdf."""
    description: str
    """What it reads, in a sentence (the API docs)."""
    coordinates: str
    """A model's input frame, e.g. "time in [-100, 100]" (the query endpoint's docs)."""
    suffixes: tuple[str, ...]
    sniff: Callable[[bytes], str | None]
    """The suffix of the format (".png"...) a file's first bytes look like, or None when they
    are not this kind (content, not the name, decides)."""
    loader: Callable[..., Signal]
    """loader(path, protocol=None, device="cpu", **caps) -> Signal; raises SignalError. Called
    through `load`, which has checked the protocol."""
    write_outputs: Callable[[NeuralExperts, dict[str, Any], Path], list[Path]]
    """Writes the kind's default outputs (reconstruction, experts...) into a fit's folder."""
    cpu_step_s: float
    """Seconds per training step of the fast preset on a 2-core CPU worker, manager pretraining
    included, as bench/RESULTS.md measured it (the page's run-time estimate, before a fit starts)."""
    metric_name: str = "loss"
    """What progress_metric reports (psnr for images...)."""
    protocols: tuple[str, ...] = ()
    """The data protocols `load` takes besides None (read whole): "paper" for images. The fit
    option `protocol` offers every kind's (model.options)."""
    outputs: dict[str, Output] = field(default_factory=dict)
    media_family: str | None = None
    """The top-level media type its uploads are declared as ("image" for image/png...): an upload
    declared as another kind's is refused. None: declared types say nothing of this kind."""
    media_types: dict[str, str] = field(default_factory=dict)
    """suffix -> media type of the formats the service may serve back under their own type;
    any other is sent as bytes to save, never as a type a browser would run."""
    caps: tuple[Cap, ...] = ()
    poor_results: tuple[PoorResult, ...] = ()
    """The first one whose metric is under its bound says why a result is poor."""

    def cap(self, setting: str) -> Cap:
        return next(c for c in self.caps if c.setting == setting)

    def load(self, path: Path, protocol: str | None = None, **options: Any) -> Signal:
        """The signal in `path`, read by this kind's loader once `protocol` is one it takes."""
        self.check_protocol(protocol)
        return self.loader(path, protocol=protocol, **options)

    def check_protocol(self, protocol: str | None) -> None:
        """SignalError unless `protocol` is None or one this kind declares: the option offers
        every kind's protocols, so an upload may name another kind's ("paper" for audio)."""
        if protocol is None or protocol in self.protocols:
            return
        choices = (f"choose one of {', '.join(map(repr, self.protocols))}" if self.protocols
                   else "they take none: they are always fitted whole")
        raise SignalError(f"unknown protocol {protocol!r} for {self.label} files; {choices}",
                          "invalid_option")


def grid_batch(grid: Grid, values: Tensor, generator: torch.Generator, max_points: int) -> Batch:
    """Every grid point with its value, or `max_points` of them drawn at random: a large signal
    trains on a fresh subset each step."""
    coords = grid.coords(values.device)
    if coords.shape[0] <= max_points:
        return Batch(coords, values)
    rows = torch.randint(0, coords.shape[0], (max_points,), generator=generator, device=values.device)
    return Batch(coords[rows], values[rows])


def expert_weights(logits: Tensor | None, values: Tensor) -> Tensor:
    """q_i(x) as (K, N): softmax of the manager (temperature 1); all ones for a SIREN."""
    if logits is None:
        return torch.ones(1, values.shape[1], device=values.device, dtype=values.dtype)
    return torch.softmax(logits, dim=-1).T


def argmax_values(values: Tensor, logits: Tensor | None) -> Tensor:
    """The hard top-1 output y(x) = f_j(x), j = argmax q: (K, N, C) -> (N, C)."""
    if logits is None:
        return values[0]
    ids = logits.argmax(dim=-1)
    return values.gather(0, ids[None, :, None].expand(1, -1, values.shape[-1]))[0]


def reconstruction_loss(values: Tensor, logits: Tensor | None, target: Tensor) -> dict[str, Tensor]:
    """1000 * mean over points, channels, experts of q_i (f_i - y)^2 (docs/method.md#losses)."""
    q = expert_weights(logits, values)
    loss = 1000.0 * (q[..., None] * (values - target) ** 2).mean()
    return {"loss": loss}


class SampledSignal:
    """Training methods shared by signals whose samples lie on their own `grid` (images, audio):
    batches of grid points with their values, the reconstruction loss, the argmax MSE."""

    grid: Grid

    def grid_values(self) -> Tensor:
        raise NotImplementedError

    def batch(self, generator: torch.Generator, max_points: int) -> Batch:
        return grid_batch(self.grid, self.grid_values(), generator, max_points)

    def loss(self, values: Tensor, logits: Tensor | None, batch: Batch) -> dict[str, Tensor]:
        return reconstruction_loss(values, logits, batch.target)

    @staticmethod
    def argmax_mse(values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        return float(((argmax_values(values, logits) - batch.target) ** 2).mean())


_KINDS: dict[str, SignalKind] = {}


def register(kind: SignalKind) -> SignalKind:
    assert kind.name not in _KINDS, f"signal kind {kind.name!r} registered twice"
    _KINDS[kind.name] = kind
    return kind


def kinds() -> dict[str, SignalKind]:
    return _KINDS

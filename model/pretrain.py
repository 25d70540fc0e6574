"""Manager pretraining: teach the manager a signal-independent partition before fitting.

The paper's best option is a random map (one uniformly random expert per grid cell); its
targets do not depend on the signal, so the pretrained weights depend only on the architecture,
the grid and the seed, and are cached on disk and reused by every fit with the same key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.cluster.vq import kmeans2  # type: ignore[import-untyped]
from torch import Tensor

from model.network import NeuralExperts, train_rows
from model.signals.base import Grid

PRETRAIN_MODES = ("random", "grid", "kmeans", "none")
LABEL_SMOOTHING = 0.01  # docs/method.md#losses: CE with label smoothing 0.01
BALANCE_WEIGHT = 0.1  # docs/method.md#losses: + 0.1 * BCEWithLogits(logits, 1/K)
PRETRAIN_LR = 1e-4  # Adam; the reference's pretraining rate


def grid_labels(mode: str, grid: Grid, k: int, seed: int, values: Tensor | None = None) -> Tensor:
    """One expert label per grid cell, (prod(grid.shape),)."""
    n = int(np.prod(grid.shape))
    if mode == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, k, (n,), generator=gen)
    if mode == "grid":
        # Tiles: split the first axis into K bands, each band one expert (a 1-D or N-D tiling).
        return (torch.arange(n) * k // n).long()
    if mode == "kmeans":
        if values is None:
            raise ValueError("k-means pretraining needs a signal with values on its grid")
        _, labels = kmeans2(values.cpu().numpy().astype(np.float64), k, seed=seed, minit="++")
        return torch.from_numpy(labels).long()
    raise ValueError(f"unknown pretraining {mode!r}; choose one of {', '.join(PRETRAIN_MODES)}")


def manager_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """1000 * [CE(label smoothing 0.01) + 0.1 * BCEWithLogits(logits, 1/K)] (docs/method.md#losses)."""
    k = logits.shape[-1]
    ce = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
    bce = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 / k))
    return 1000.0 * (ce + BALANCE_WEIGHT * bce)


@dataclass(frozen=True)
class Pretraining:
    """How the manager is pretrained: everything but the model, its grid and the signal."""

    mode: str
    """random (the paper), grid, kmeans or none: see `grid_labels`."""
    steps: int
    max_points: int
    """Cap on points per step: larger grids pretrain on a random subset of this size."""
    seed: int = 0
    lr: float = PRETRAIN_LR

    @property
    def cacheable(self) -> bool:
        """The labels depend on the grid and seed alone, not on the signal's values."""
        return self.mode in ("random", "grid")


def pretrain_manager(
    model: NeuralExperts,
    grid: Grid,
    pretraining: Pretraining,
    values: Tensor | None = None,
    on_step: Callable[[int, float], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> int:
    """Train encoders + manager to reproduce the labels, stopping early once `until()` is true (a
    fit's time budget); returns the steps it ran."""
    if model.manager is None or pretraining.mode == "none" or pretraining.steps <= 0:
        return 0
    device = next(model.parameters()).device
    coords = grid.coords(device)
    labels = grid_labels(pretraining.mode, grid, model.n_experts, pretraining.seed, values).to(device)
    max_points = pretraining.max_points
    _, others = model.parameter_groups()
    opt = torch.optim.Adam(others, lr=pretraining.lr, fused=device.type in ("cpu", "cuda"))
    gen = torch.Generator(device=device).manual_seed(pretraining.seed)
    rows = train_rows(device)
    for step in range(pretraining.steps):
        if until is not None and until():
            return step
        if coords.shape[0] > max_points:
            picked = torch.randint(0, coords.shape[0], (max_points,), device=device, generator=gen)
            x, y = coords[picked], labels[picked]
        else:
            x, y = coords, labels
        opt.zero_grad(set_to_none=True)
        total = x.new_zeros(())
        pieces = max(1, math.ceil(x.shape[0] / rows))
        for xs, ys in zip(x.tensor_split(pieces), y.tensor_split(pieces), strict=True):
            # Both terms are means over points: weighting by the share of rows sums to the whole.
            loss = manager_loss(model.manager_logits(xs, model.expert_encoder(xs)), ys)
            weighted = loss * (xs.shape[0] / x.shape[0])
            weighted.backward()
            total += weighted.detach()
        opt.step()
        if on_step is not None:
            on_step(step, float(total))
    return pretraining.steps


def cache_key(model: NeuralExperts, grid: Grid, pretraining: Pretraining) -> str:
    spec = {
        "model": model.config.to_dict(), "grid": [list(grid.shape), grid.low, grid.high],
        "mode": pretraining.mode, "steps": pretraining.steps, "max_points": pretraining.max_points,
        "seed": pretraining.seed, "lr": pretraining.lr, "version": 2,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def pretrained_model(
    model: NeuralExperts,
    grid: Grid,
    pretraining: Pretraining,
    cache_dir: Path | None,
    values: Tensor | None = None,
    on_step: Callable[[int, float], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> bool:
    """Load `model` with pretrained weights from the cache, or pretrain and cache them.

    Signal-dependent modes (k-means) are never cached. Returns True on a cache hit. `on_step`
    runs after every pretraining step; an exception it raises (a cancel) leaves no cache entry,
    nor does a pretraining that `until` cut short (its weights are not the key's).
    """
    path = None
    if cache_dir is not None and pretraining.cacheable:
        path = cache_dir / f"manager-{cache_key(model, grid, pretraining)}.safetensors"
        if path.exists():
            model.load_state_dict(load_file(str(path), device=str(next(model.parameters()).device)))
            return True
    ran = pretrain_manager(model, grid, pretraining, values, on_step, until)
    if path is not None and ran == pretraining.steps:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(path)  # atomic: concurrent fits never read a half-written cache entry
    return False

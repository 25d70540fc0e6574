"""A multi-resolution feature grid, hashed where a level outgrows its table (instant-ngp: Müller
et al. 2022, "Instant Neural Graphics Primitives with a Multiresolution Hash Encoding", sec. 3),
in plain torch: per level the cell's corner indices, a spatial hash only when the level's
(res + 1)^d vertices exceed the table, one gather, and (bi/tri)linear weights.

A sine MLP must spend its depth making high frequencies out of two coordinates; a grid stores
them, so a fit reaches a given PSNR in a fraction of the time (docs/method.md#the-size-rule).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

HASH_PRIMES = (1, 2_654_435_761, 805_459_861)
"""instant-ngp's per-axis primes (eq. 4): the first axis unscaled keeps neighbours apart in cache."""
TABLE_INIT = 1e-4  # instant-ngp's U(-1e-4, 1e-4): the MLP sees ~0 at first and learns from there
TABLE_GAIN = 10.0
"""Features are table * TABLE_GAIN: Adam moves a weight by ~lr a step whatever its gradient's
scale, so the table learns 10x faster than the MLPs at one lr (instant-ngp's tables: 1e-2)."""


def level_resolutions(levels: int, base: int, finest: int) -> list[int]:
    """Cells per axis at each level, growing geometrically from `base` to `finest` (eq. 2, 3)."""
    if levels == 1:
        return [base]
    growth = math.exp((math.log(finest) - math.log(base)) / (levels - 1))
    return [math.floor(base * growth**level + 1e-6) for level in range(levels)]


class HashGrid(nn.Module):
    """x in [-bound, bound]^d -> (N, levels * features) interpolated grid features.

    All levels share one flat table (level l holds rows offsets[l] .. offsets[l] + sizes[l]), so
    a forward is one gather however many levels there are.
    """

    def __init__(self, in_dim: int, levels: int, features: int, log2_table: int, base: int,
                 finest: int, bound: float) -> None:
        super().__init__()
        if not 1 <= in_dim <= len(HASH_PRIMES):
            raise ValueError(f"a grid encoding takes 1 to {len(HASH_PRIMES)} coordinates, got {in_dim}")
        self.in_dim, self.levels, self.features, self.bound = in_dim, levels, features, bound
        resolutions = level_resolutions(levels, base, finest)
        table = 1 << log2_table
        vertices = [(r + 1) ** in_dim for r in resolutions]
        sizes = [min(table, v) for v in vertices]
        init = TABLE_INIT / TABLE_GAIN
        self.table = nn.Parameter(torch.empty(sum(sizes), features).uniform_(-init, init))
        self.resolution: Tensor
        self.size: Tensor
        self.offset: Tensor
        self.hashed: Tensor
        self.multiplier: Tensor
        self.register_buffer("resolution", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("size", torch.tensor(sizes), persistent=False)
        self.register_buffer("offset", torch.tensor([0, *itertools.accumulate(sizes)][:-1]), persistent=False)
        self.register_buffer("hashed", torch.tensor([v > table for v in vertices]), persistent=False)
        # What a vertex coordinate is multiplied by on each axis: a hashed level's prime (eq. 4),
        # or a dense level's row-major stride over its (res + 1)^d vertices, first axis slowest.
        multipliers = [HASH_PRIMES[:in_dim] if v > table else
                       [(r + 1) ** (in_dim - 1 - j) for j in range(in_dim)]
                       for r, v in zip(resolutions, vertices, strict=True)]
        self.register_buffer("multiplier", torch.tensor(multipliers), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: Tensor) -> Tensor:  # (N, d) -> (N, levels * features)
        unit = ((x / self.bound + 1.0) * 0.5).clamp(0.0, 1.0)
        pos = unit[:, None, :] * self.resolution[None, :, None]  # (N, L, d)
        cell = torch.minimum(pos.floor(), (self.resolution - 1.0)[None, :, None])
        frac = pos - cell
        # Each axis's two candidate vertices (the cell's lower and upper), scaled: (N, L, d, 2).
        # A corner combines one of each per axis, by XOR where the level is hashed (then taken
        # modulo its power-of-two table by a mask) and by sum where it is dense. Working per axis
        # keeps the intermediates at (N, L, 2^d), not (N, L, 2^d, d).
        lower_upper = cell.long()[..., None] + torch.arange(2, device=x.device)
        scaled = lower_upper * self.multiplier[:, :, None]
        hashed = _corners(scaled, torch.bitwise_xor) & (self.size[:, None] - 1)
        index = torch.where(self.hashed[:, None], hashed, _corners(scaled, torch.add))
        weights = _corners(torch.stack([1.0 - frac, frac], -1), torch.mul)  # (N, L, 2^d)
        rows = (index + self.offset[:, None]).flatten()
        out: Tensor = _Interpolate.apply(self.table, rows, weights)
        return out.flatten(1) * TABLE_GAIN


def _corners(per_axis: Tensor, combine: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """(N, L, d, 2) per-axis choices -> (N, L, 2^d): for each corner of the cell, in
    itertools.product order (the last axis fastest), `combine` over the axes of its choices."""
    out = per_axis[:, :, 0]
    for axis in range(1, per_axis.shape[2]):
        out = combine(out[..., :, None], per_axis[:, :, axis, None, :]).flatten(2)
    return out


class _Interpolate(torch.autograd.Function):
    """sum over corners of weight * table[row]: (N, L, F) from rows (N * L * 2^d,) and weights
    (N, L, 2^d). Its backward is one index_add_ into the table: autograd's embedding backward
    sorted the rows first and took half of a step; coordinates get no gradient (no fit needs one)."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(rows, weights)
        ctx.table_rows = table.shape[0]
        values = table.index_select(0, rows).view(*weights.shape, table.shape[1])
        return (values * weights[..., None]).sum(2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        rows, weights = ctx.saved_tensors
        per_corner = (weights[..., None] * grad[:, :, None, :]).reshape(rows.shape[0], grad.shape[-1])
        grad_table = grad.new_zeros(ctx.table_rows, grad.shape[-1]).index_add_(0, rows, per_corner)
        return grad_table, None, None

"""Neural Experts and its baselines, read top to bottom.

activations and init -> Linear / ExpertsLinear -> MLP blocks -> ModelConfig -> NeuralExperts.

One class covers every model in the paper's tables: K > 1 experts with a manager is Neural
Experts (conditioning "concat") or Vanilla MoE (conditioning "none"); K = 1 with no manager is
SIREN (an encoder followed by one decoder), which is exactly how the paper's baselines are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.encoding import HashGrid
from model.kernels import activated, affine

# --------------------------------------------------------------------------- activations + init

W0 = 30.0  # SIREN's frequency factor (Sitzmann et al. 2020, sec. 3.2), used in every layer.
SOFTPLUS_BETA = 100.0  # docs/method.md#activations: softplus with beta 100.


def _finer(scaled: Tensor) -> Tensor:
    # FINER (Liu et al. 2024): sin(w0 (|z| + 1) z), the (|z| + 1) factor detached as in the paper.
    scale = (scaled.detach().abs() / W0) + 1.0
    return torch.sin(scaled * scale)


@dataclass(frozen=True)
class Activation:
    """How one activation is computed and how the layers feeding it are initialised.

    `pre_scale` is folded into the preceding matmul (addmm's alpha/beta), so sine layers cost
    one GEMM plus one elementwise kernel instead of GEMM + add + mul + sin.
    """

    fn: Callable[[Tensor], Tensor]
    pre_scale: float
    siren_init: bool  # SIREN's uniform init (else Kaiming normal, the reference's softplus init)
    fourier_features: bool = False
    fn_: Callable[[Tensor], Tensor] | None = None
    """In-place form, used where no gradient is needed (rendering): no new buffer per layer."""
    fused: bool = False
    """Train through `SineAffine`: one elementwise pass per layer in backward, not four."""


ACTIVATIONS: dict[str, Activation] = {
    "sine": Activation(torch.sin, W0, siren_init=True, fn_=torch.sin_, fused=True),
    "finer": Activation(_finer, W0, siren_init=True),
    "softplus": Activation(lambda z: F.softplus(z, beta=SOFTPLUS_BETA), 1.0, siren_init=False),
    "softplus-ff": Activation(
        lambda z: F.softplus(z, beta=SOFTPLUS_BETA), 1.0, siren_init=False, fourier_features=True
    ),
}


def init_weight_(weight: Tensor, fan_in: int, first: bool, act: Activation) -> None:
    """SIREN init (docs/method.md#activations): U(+-1/fan_in) on coordinates, U(+-sqrt(6/fan_in)/w0) else."""
    with torch.no_grad():
        if not act.siren_init:
            weight.normal_(0.0, math.sqrt(2.0 / fan_in))  # Kaiming normal (ReLU gain), fan-in
        elif first:
            weight.uniform_(-1.0 / fan_in, 1.0 / fan_in)
        else:
            bound = math.sqrt(6.0 / fan_in) / W0
            weight.uniform_(-bound, bound)


# --------------------------------------------------------------------------- layers


class Linear(nn.Module):
    """y = act(scale * (x @ W + b)), or the affine part alone when act is None. W is (in, out)."""

    def __init__(self, fan_in: int, fan_out: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.scale = scale

    def forward(self, x: Tensor, act: Activation | None = None) -> Tensor:  # (N, in) -> (N, out)
        if act is None:
            return affine(x, self.weight, self.bias, self.scale)
        return activated(x, self.weight, self.bias, self.scale, act)


class ExpertsLinear(nn.Module):
    """K independent linear layers as one batched matmul; weights stacked as (K, in, out)."""

    def __init__(self, n: int, fan_in: int, fan_out: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(n, 1, fan_out))
        self.scale = scale

    def forward(self, x: Tensor, act: Activation | None = None) -> Tensor:
        """(N, in) shared by all experts, or (K, N, in) -> (K, N, out)."""
        if act is None:
            return affine(x, self.weight, self.bias, self.scale)
        return activated(x, self.weight, self.bias, self.scale, act)


class FourierFeatures(nn.Module):
    """[x, sin(2 pi B x), cos(2 pi B x)] / sqrt(m), B ~ N(0, 1) (Tancik et al. 2020, as the reference)."""

    def __init__(self, in_dim: int, n_frequencies: int) -> None:
        super().__init__()
        self.frequencies: Tensor
        self.register_buffer("frequencies", torch.randn(n_frequencies, in_dim))
        self.out_dim = in_dim + 2 * n_frequencies

    def forward(self, x: Tensor) -> Tensor:
        proj = (2 * math.pi * x) @ self.frequencies.T
        norm = math.sqrt(self.frequencies.shape[0])
        return torch.cat([x, torch.sin(proj) / norm, torch.cos(proj) / norm], dim=-1)


class MLP(nn.Module):
    """`layers` linear layers of one width; activation after each, except a linear last layer.

    With `n_parallel` the block is K independent MLPs evaluated as batched matmuls.
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        out_dim: int,
        layers: int,
        act: Activation,
        last_linear: bool,
        n_parallel: int | None = None,
        first_on_coords: bool = False,
    ) -> None:
        super().__init__()
        self.act = act
        self.last_linear = last_linear
        dims = [in_dim] + [width] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList()
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            is_last = i == layers - 1
            scale = 1.0 if (is_last and last_linear) else act.pre_scale
            layer: Linear | ExpertsLinear = (
                Linear(fan_in, fan_out, scale)
                if n_parallel is None
                else ExpertsLinear(n_parallel, fan_in, fan_out, scale)
            )
            init_weight_(layer.weight, fan_in, first=(i == 0 and first_on_coords), act=act)
            self.layers.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, None if (i == last and self.last_linear) else self.act)
        return x


# --------------------------------------------------------------------------- config

Conditioning = Literal["none", "max", "mean", "concat"]
Encoding = Literal["mlp", "grid"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved verbatim in a checkpoint's config.json."""

    in_dim: int
    out_dim: int
    activation: str = "sine"
    encoder_width: int = 128
    """Expert encoder E(x): 4 layers of this width ("128x2" in the paper), activated output."""
    expert_width: int = 128
    """Each expert f_i: 4 layers, linear output."""
    n_experts: int = 4
    """K. With 1 there is no manager: the model is a SIREN (encoder + one decoder)."""
    manager_encoder_width: int = 128
    manager_width: int = 128
    conditioning: Conditioning = "concat"
    """How the manager sees E(x): concat (the paper), max / mean (added elementwise), none (Vanilla MoE)."""
    layers: int = 4
    fourier_frequencies: int = field(default=0)
    """Fourier-feature input size; set from the activation when 0 (encoder width / 2, as the reference)."""
    encoding: Encoding = "mlp"
    """E(x): "mlp", the paper's encoder (an MLP of `activation`); "grid", a multi-resolution hash grid
    (model/encoding.py) whose features feed the experts and the manager (the manager keeps its own
    MLP encoder). The grid_* fields apply to "grid" only."""
    grid_levels: int = 16
    grid_features: int = 2
    """Features per level: E(x) has grid_levels * grid_features values."""
    grid_log2_table: int = 17
    """log2 of a level's table rows; a level with more vertices than that is hashed."""
    grid_base_resolution: int = 16
    grid_finest_resolution: int = 512
    grid_bound: float = 1.0
    """Coordinates span [-grid_bound, grid_bound] on every axis (images 1, audio 100, 3D 1.2)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
        if self.n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {self.n_experts}")
        if self.conditioning not in ("none", "max", "mean", "concat"):
            raise ValueError(f"conditioning {self.conditioning!r} not in none/max/mean/concat")
        if self.encoding not in ("mlp", "grid"):
            raise ValueError(f"encoding {self.encoding!r} not in mlp/grid")
        if self.conditioning in ("max", "mean") and self.encoded_dim != self.manager_encoder_width:
            raise ValueError(
                f"{self.conditioning} conditioning needs equal encoder widths, got "
                f"{self.encoded_dim} and {self.manager_encoder_width}"
            )

    @property
    def encoded_dim(self) -> int:
        """Width of E(x), what every expert and the manager read."""
        return self.grid_levels * self.grid_features if self.encoding == "grid" else self.encoder_width

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- model

CPU_BATCH_ROWS = 4096
"""Rows per GEMM run on a CPU, for rendering chunks and training micro-batches: a (N, 128) x
(128, 128) GEMM ran at 85 GFLOPS per core with N = 4096 against 67 with N = 16384 on a 2-core
EPYC, where the activations of 4096 rows stay in the 2 MB L2; on a 2-core Xeon the sweep in
bench/RESULTS.md ("Rows per GEMM run") was flat within its noise from 2048 to 16384."""
GPU_RENDER_CHUNK = 1 << 18  # a GPU wants big launches; dense activations of the largest preset ~0.5 GB


def train_rows(device: torch.device) -> int:
    """Rows per training micro-batch: CPU_BATCH_ROWS on a CPU (a 128 x 128 image's step went
    1.25x -> 1.5x the reference's speed); a GPU takes the batch whole."""
    return CPU_BATCH_ROWS if device.type == "cpu" else 1 << 62


class NeuralExperts(nn.Module):
    """y(x) = f_j(E(x)), j = argmax softmax(g([M(x), E(x)])) (Ben-Shabat et al. 2024, sec. 3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        act = ACTIVATIONS[c.activation]
        self.expert_encoder = self._expert_encoder(act)
        self.experts = MLP(
            c.encoded_dim, c.expert_width, c.out_dim, c.layers, act, last_linear=True,
            n_parallel=c.n_experts,
        )
        self.manager_encoder: nn.Module | None = None
        self.manager: MLP | None = None
        if c.n_experts > 1:
            self.manager_encoder = self._encoder(c.manager_encoder_width, act)
            manager_in = c.manager_encoder_width + (c.encoded_dim if c.conditioning == "concat" else 0)
            self.manager = MLP(manager_in, c.manager_width, c.n_experts, c.layers, act, last_linear=True)

    def _expert_encoder(self, act: Activation) -> nn.Module:
        c = self.config
        if c.encoding == "mlp":
            return self._encoder(c.encoder_width, act)
        return HashGrid(c.in_dim, c.grid_levels, c.grid_features, c.grid_log2_table,
                        c.grid_base_resolution, c.grid_finest_resolution, c.grid_bound)

    def _encoder(self, width: int, act: Activation) -> nn.Module:
        c = self.config
        if not act.fourier_features:
            return MLP(c.in_dim, width, width, c.layers, act, last_linear=False, first_on_coords=True)
        ff = FourierFeatures(c.in_dim, c.fourier_frequencies or width // 2)
        return nn.Sequential(ff, MLP(ff.out_dim, width, width, c.layers, act, last_linear=False))

    @property
    def n_experts(self) -> int:
        return self.config.n_experts

    def manager_logits(self, x: Tensor, encoded: Tensor) -> Tensor:
        """Logits over experts, (N, K), from coordinates x (N, d) and E(x) (N, W)."""
        assert self.manager is not None and self.manager_encoder is not None, "SIREN has no manager"
        m = self.manager_encoder(x)
        mode = self.config.conditioning
        if mode == "concat":
            m = torch.cat([m, encoded], dim=-1)  # manager-encoder output first (docs/method.md#architecture)
        elif mode == "max":
            m = torch.maximum(m, encoded)
        elif mode == "mean":
            m = 0.5 * (m + encoded)
        return self.manager(m)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Dense path for training: every expert on every point.

        x: (N, in_dim) -> (values (K, N, out_dim), logits (N, K) or None for SIREN).
        """
        self._check_coordinates(x)
        encoded = self.expert_encoder(x)
        values = self.experts(encoded)
        logits = self.manager_logits(x, encoded) if self.manager is not None else None
        return values, logits

    @torch.inference_mode()
    def predict_dense(self, x: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        """Argmax output through the dense path: (values (N, out_dim), expert ids (N,))."""
        self._check_coordinates(x)
        chunk = chunk or _render_chunk(x)
        values = x.new_empty(x.shape[0], self.config.out_dim)
        ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        for start in range(0, x.shape[0], chunk):
            every, logits = self(x[start : start + chunk])
            chunk_ids = _argmax_ids(logits, every.shape[1], x.device)
            values[start : start + chunk] = every.gather(
                0, chunk_ids[None, :, None].expand(1, -1, every.shape[-1])
            )[0]
            ids[start : start + chunk] = chunk_ids
        return values, ids

    @torch.inference_mode()
    def predict(self, x: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        """Routed inference: each point runs only its argmax expert; memory bounded by `chunk`
        points (default: CPU_BATCH_ROWS on a CPU, GPU_RENDER_CHUNK on a GPU).

        x: (N, in_dim) -> (values (N, out_dim), expert ids (N,)). Same result as predict_dense.
        """
        self._check_coordinates(x)
        chunk = chunk or _render_chunk(x)
        values = x.new_empty(x.shape[0], self.config.out_dim)
        ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk]
            encoded = self.expert_encoder(xs)
            logits = self.manager_logits(xs, encoded) if self.manager is not None else None
            chunk_ids = _argmax_ids(logits, xs.shape[0], x.device)
            values[start : start + chunk] = self._route(encoded, chunk_ids)
            ids[start : start + chunk] = chunk_ids
        return values, ids

    def forward_top_k(self, x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Sparse path for training: each point through its k most trusted experts only.

        x: (N, in_dim) -> (values (k, N, out_dim), top logits (N, k), logits (N, K)). Slot s of
        a point holds its s-th most trusted expert (slot 0 is the argmax), so the signals'
        losses read (values, top logits) as they read the dense (values, logits): the softmax
        of the top k logits is q renormalised over those k experts.
        """
        self._check_coordinates(x)
        encoded = self.expert_encoder(x)
        logits = self.manager_logits(x, encoded)
        top_logits, top_ids = logits.topk(k, dim=-1)
        values = self._route(encoded, top_ids.T.reshape(-1))  # slot-major: (k * N, out_dim)
        return values.view(k, x.shape[0], -1), top_logits, logits

    def _route(self, encoded: Tensor, ids: Tensor) -> Tensor:
        """Rows of E(x) (n, W) through the experts `ids` names -> (len(ids), out_dim).

        `ids` may name several experts per row, slot-major: entry j is row j % n's. Entries are
        grouped by expert with one sort and one gather, so every expert runs its GEMMs on a
        contiguous slice; one index_copy puts the results back in order (differentiable, so
        sparse training routes through here too).
        """
        if self.n_experts == 1:
            return self._expert_forward(0, encoded, self._unbound_experts())
        order = torch.argsort(ids, stable=True)
        counts = torch.bincount(ids, minlength=self.n_experts).tolist()
        grouped = encoded[order % encoded.shape[0]]
        experts = self._unbound_experts()
        parts = [
            self._expert_forward(k, rows, experts)
            for k, rows in enumerate(grouped.split(counts))
            if rows.shape[0]
        ]
        out = grouped.new_empty(ids.shape[0], self.config.out_dim)
        return out.index_copy(0, order, torch.cat(parts))

    def _unbound_experts(self) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...], float]]:
        """Each layer's (weights, biases) split per expert, and its scale. One unbind per layer,
        not an index per expert: its backward stacks the K gradients once, where K indexings
        would each write a zero-padded (K, in, out) gradient (K^2 work)."""
        layers = [layer for layer in self.experts.layers if isinstance(layer, ExpertsLinear)]
        return [(layer.weight.unbind(0), layer.bias.unbind(0), layer.scale) for layer in layers]

    def _expert_forward(
        self, k: int, h: Tensor, experts: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...], float]]
    ) -> Tensor:
        """Expert k alone on (n, W) rows, through views of the stacked weights (no copy)."""
        mlp = self.experts
        last = len(experts) - 1
        for i, (weights, biases, scale) in enumerate(experts):
            if i < last or not mlp.last_linear:
                h = activated(h, weights[k], biases[k][0], scale, mlp.act)
            else:
                h = affine(h, weights[k], biases[k][0], scale)
        return h

    def _check_coordinates(self, x: Tensor) -> None:
        assert x.dim() == 2 and x.shape[1] == self.config.in_dim, (
            f"expected coordinates (N, {self.config.in_dim}), got {tuple(x.shape)}"
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(experts' parameters, everything else): the paper's second stage trains only the first."""
        experts = list(self.experts.parameters())
        ids = {id(p) for p in experts}
        return experts, [p for p in self.parameters() if id(p) not in ids]

    def routing_parameters(self) -> list[nn.Parameter]:
        """The manager's and its encoder's parameters (none for a SIREN)."""
        if self.manager is None or self.manager_encoder is None:
            return []
        return [*self.manager_encoder.parameters(), *self.manager.parameters()]


def _render_chunk(x: Tensor) -> int:
    return CPU_BATCH_ROWS if x.device.type == "cpu" else GPU_RENDER_CHUNK


def _argmax_ids(logits: Tensor | None, n: int, device: torch.device) -> Tensor:
    """The manager's choice per point; a SIREN (no manager) routes everything to its decoder."""
    if logits is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    return logits.argmax(dim=-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

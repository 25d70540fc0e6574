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

# --------------------------------------------------------------------------- activations + init

W0 = 30.0  # SIREN's frequency factor (Sitzmann et al. 2020, sec. 3.2), used in every layer.
SOFTPLUS_BETA = 100.0  # method.md: softplus with beta 100.


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


ACTIVATIONS: dict[str, Activation] = {
    "sine": Activation(torch.sin, W0, siren_init=True),
    "finer": Activation(_finer, W0, siren_init=True),
    "softplus": Activation(lambda z: F.softplus(z, beta=SOFTPLUS_BETA), 1.0, siren_init=False),
    "softplus-ff": Activation(
        lambda z: F.softplus(z, beta=SOFTPLUS_BETA), 1.0, siren_init=False, fourier_features=True
    ),
}


def init_weight_(weight: Tensor, fan_in: int, first: bool, act: Activation) -> None:
    """SIREN init (method.md): U(+-1/fan_in) on a coordinate input, U(+-sqrt(6/fan_in)/w0) else."""
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
    """y = scale * (x @ W + b) in one addmm. Weight stored (in, out)."""

    def __init__(self, fan_in: int, fan_out: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:  # (N, in) -> (N, out)
        return torch.addmm(self.bias, x, self.weight, beta=self.scale, alpha=self.scale)


class ExpertsLinear(nn.Module):
    """K independent linear layers as one batched matmul; weights stacked as (K, in, out)."""

    def __init__(self, n: int, fan_in: int, fan_out: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(n, 1, fan_out))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:  # (N, in) shared or (K, N, in) -> (K, N, out)
        if x.dim() == 2:
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight, beta=self.scale, alpha=self.scale)

    def select(self, k: int) -> Linear:
        """Expert k's layer as a plain Linear sharing this layer's storage (for routed inference)."""
        layer = Linear.__new__(Linear)
        nn.Module.__init__(layer)
        layer.weight = nn.Parameter(self.weight[k], requires_grad=False)
        layer.bias = nn.Parameter(self.bias[k, 0], requires_grad=False)
        layer.scale = self.scale
        return layer


class FourierFeatures(nn.Module):
    """[x, sin(2 pi B x), cos(2 pi B x)] / sqrt(m), B ~ N(0, 1) (Tancik et al. 2020, as the reference)."""

    def __init__(self, in_dim: int, n_frequencies: int) -> None:
        super().__init__()
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
            x = layer(x)
            if i < last or not self.last_linear:
                x = self.act.fn(x)
        return x


# --------------------------------------------------------------------------- config

Conditioning = Literal["none", "max", "mean", "concat"]


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

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
        if self.n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {self.n_experts}")
        if self.conditioning not in ("none", "max", "mean", "concat"):
            raise ValueError(f"conditioning {self.conditioning!r} not in none/max/mean/concat")
        if self.conditioning in ("max", "mean") and self.encoder_width != self.manager_encoder_width:
            raise ValueError(
                f"{self.conditioning} conditioning needs equal encoder widths, got "
                f"{self.encoder_width} and {self.manager_encoder_width}"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- model


class NeuralExperts(nn.Module):
    """y(x) = f_j(E(x)), j = argmax softmax(g([M(x), E(x)])) (Ben-Shabat et al. 2024, sec. 3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        act = ACTIVATIONS[c.activation]
        self.expert_encoder = self._encoder(c.encoder_width, act)
        self.experts = MLP(
            c.encoder_width, c.expert_width, c.out_dim, c.layers, act, last_linear=True,
            n_parallel=c.n_experts,
        )
        self.manager_encoder: nn.Module | None = None
        self.manager: MLP | None = None
        if c.n_experts > 1:
            self.manager_encoder = self._encoder(c.manager_encoder_width, act)
            manager_in = c.manager_encoder_width + (c.encoder_width if c.conditioning == "concat" else 0)
            self.manager = MLP(manager_in, c.manager_width, c.n_experts, c.layers, act, last_linear=True)

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
            m = torch.cat([m, encoded], dim=-1)  # manager-encoder output first (method.md)
        elif mode == "max":
            m = torch.maximum(m, encoded)
        elif mode == "mean":
            m = 0.5 * (m + encoded)
        return self.manager(m)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Dense path for training: every expert on every point.

        x: (N, in_dim) -> (values (K, N, out_dim), logits (N, K) or None for SIREN).
        """
        assert x.dim() == 2 and x.shape[1] == self.config.in_dim, (
            f"expected coordinates (N, {self.config.in_dim}), got {tuple(x.shape)}"
        )
        encoded = self.expert_encoder(x)
        values = self.experts(encoded)
        logits = self.manager_logits(x, encoded) if self.manager is not None else None
        return values, logits

    @torch.no_grad()
    def predict_dense(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Argmax output through the dense path: (values (N, out_dim), expert ids (N,))."""
        values, logits = self(x)
        ids = _argmax_ids(logits, x)
        return values.gather(0, ids[None, :, None].expand(1, -1, values.shape[-1]))[0], ids

    @torch.no_grad()
    def predict(self, x: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Routed inference: each point runs only its argmax expert; memory bounded by `chunk`.

        x: (N, in_dim) -> (values (N, out_dim), expert ids (N,)). Same result as predict_dense.
        """
        values = torch.empty(x.shape[0], self.config.out_dim, device=x.device, dtype=x.dtype)
        ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        experts = [self._expert(k) for k in range(self.n_experts)]
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk]
            encoded = self.expert_encoder(xs)
            chunk_ids = _argmax_ids(self.manager_logits(xs, encoded) if self.manager else None, xs)
            out = values[start : start + chunk]
            for k, expert in enumerate(experts):
                rows = (chunk_ids == k).nonzero().squeeze(1)
                if rows.numel():
                    out[rows] = expert(encoded[rows])
            ids[start : start + chunk] = chunk_ids
        return values, ids

    def _expert(self, k: int) -> MLP:
        """Expert k as a standalone MLP viewing the stacked weights (no copy)."""
        mlp = MLP.__new__(MLP)
        nn.Module.__init__(mlp)
        mlp.act, mlp.last_linear = self.experts.act, self.experts.last_linear
        mlp.layers = nn.ModuleList(layer.select(k) for layer in self.experts.layers)
        return mlp

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(experts' parameters, everything else): the paper's second stage trains only the first."""
        experts = list(self.experts.parameters())
        ids = {id(p) for p in experts}
        return experts, [p for p in self.parameters() if id(p) not in ids]


def _argmax_ids(logits: Tensor | None, x: Tensor) -> Tensor:
    if logits is None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return logits.argmax(dim=-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

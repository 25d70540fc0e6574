"""The reference implementation's image model and training step, re-created for timing only.

sitzikbs/Neural-Experts evaluates every layer as `torch.einsum(...) + bias` followed by a separate
`torch.sin(30 * x)` (models/modules.py: FullyConnectedNN, ParallelFullyConnectedNN), and each
training step (image_reconstruction/train_rgbimage.py + models/rgb_losses.py) sets
`coords.requires_grad`, runs the full batch, takes the q-weighted loss on (1, N, C, K) permuted
predictions, computes its PSNR and per-expert PSNR under no_grad, and steps a per-tensor Adam.
This module follows that formulation op for op, so the speed comparison is against the same
arithmetic and the same eager kernels; it shares no code with model/.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

W0 = 30.0  # the reference's Sine(freq=30)


def _siren_weight(shape: tuple[int, ...], fan_in: int, first: bool) -> nn.Parameter:
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / W0
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class ReferenceMLP(nn.Module):
    """FullyConnectedNN: einsum '...nd,dh->...nh' + bias, then sin(30 x) as its own op."""

    def __init__(self, dims: list[int], last_linear: bool, first_on_coords: bool) -> None:
        super().__init__()
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.weights = nn.ParameterList(
            _siren_weight((a, b), a, first_on_coords and i == 0) for i, (a, b) in enumerate(pairs)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for _, b in pairs)
        self.last_linear = last_linear

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.einsum("...nd,dh->...nh", x, w) + b
            if i < last or not self.last_linear:
                x = torch.sin(W0 * x)
        return x


class ReferenceExperts(nn.Module):
    """ParallelFullyConnectedNN: K experts as einsum '...knd,kdh->...knh', linear last layer."""

    def __init__(self, k: int, dims: list[int]) -> None:
        super().__init__()
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.weights = nn.ParameterList(_siren_weight((k, a, b), a, False) for a, b in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(k, b)) for _, b in pairs)

    def forward(self, x: Tensor) -> Tensor:  # (1, N, in) -> (1, K, N, out)
        x = torch.einsum("...nd,kdh->...knh", x, self.weights[0]) + self.biases[0].unsqueeze(-2)
        x = torch.sin(W0 * x)
        for w, b in zip(self.weights[1:-1], self.biases[1:-1], strict=True):
            x = torch.sin(W0 * (torch.einsum("...knd,kdh->...knh", x, w) + b.unsqueeze(-2)))
        return torch.einsum("...knh,kho->...kno", x, self.weights[-1]) + self.biases[-1].unsqueeze(-2)


class ReferenceModel(nn.Module):
    """INR_MoE with config_RGB.yaml: learned 128x2 encoders, 4 experts, concat conditioning."""

    def __init__(self, in_dim: int = 2, out_dim: int = 3, k: int = 4, width: int = 128) -> None:
        super().__init__()
        hidden = [width] * 3
        self.encoder = ReferenceMLP([in_dim, *hidden, width], last_linear=False, first_on_coords=True)
        self.experts = ReferenceExperts(k, [width, *hidden, out_dim])
        self.manager_encoder = ReferenceMLP([in_dim, *hidden, width], False, first_on_coords=True)
        self.manager = ReferenceMLP([2 * width, *hidden, k], last_linear=True, first_on_coords=False)

    def forward(self, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """coords (1, N, d) -> (predictions (1, K, N, C), q (1, K, N), selected expert (N,))."""
        encoded = self.encoder(coords)
        predictions = self.experts(encoded)
        manager_input = torch.cat([self.manager_encoder(coords), encoded], dim=-1)
        raw_q = self.manager(manager_input.reshape(-1, manager_input.shape[-1]))
        q = torch.clamp(torch.softmax(raw_q, dim=-1), 0.0)  # manager_clamp_q: 0.0
        return predictions, q.T.unsqueeze(0), torch.argmax(q, 1)


def reference_step(model: ReferenceModel, optimizer: torch.optim.Optimizer, coords: Tensor,
                   image: Tensor) -> Tensor:
    """One training step as train_rgbimage.py runs it. coords (1, N, d), image (1, N, C)."""
    model.zero_grad()
    coords.requires_grad = True
    predictions, q, selected = model(coords)
    pred_img = predictions.permute(0, 2, 3, 1)  # (1, N, C, K)
    q_points = q.permute(0, 2, 1)  # (1, N, K)
    loss = 1000.0 * (((pred_img - image.unsqueeze(-1)) ** 2) * q_points.unsqueeze(-2)).mean()
    with torch.no_grad():
        index = selected[None, None, :, None].repeat(1, 1, 1, predictions.shape[-1])
        final = torch.gather(predictions, dim=-3, index=index).squeeze(-2)
        mse = ((final.squeeze() - image.squeeze()) ** 2).mean()
        peak = image.max().square()
        torch.log10(peak / mse)
        torch.log10(peak / ((pred_img - image.unsqueeze(-1)) ** 2).mean(1).mean(1).squeeze())
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def reference_render(model: ReferenceModel, coords: Tensor, chunk: int) -> Tensor:
    """The argmax output, dense: every expert on every point (as the reference's test script)."""
    out = []
    for start in range(0, coords.shape[0], chunk):
        predictions, _, selected = model(coords[None, start : start + chunk])
        index = selected[None, None, :, None].expand(1, 1, -1, predictions.shape[-1])
        out.append(torch.gather(predictions, dim=-3, index=index)[0, 0])
    return torch.cat(out)

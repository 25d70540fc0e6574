"""The fast paths compute what the plain ones do: fused sine backward, micro-batched steps,
routed rendering, the compiled step."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor

from model.fit import accumulate_gradients, balance_loss, make_loss_fn, split_batch
from model.kernels import SineAffine, affine
from model.network import MLP, ModelConfig, NeuralExperts
from model.signals.base import Batch, reconstruction_loss


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "b_shape"),
    [((7, 3), (3, 5), (5,)), ((4, 7, 3), (4, 3, 5), (4, 1, 5)), ((7, 3), (4, 3, 5), (4, 1, 5))],
    ids=["linear", "stacked", "shared-input"],
)
def test_fused_sine_matches_autograd(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                                     b_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*x_shape, dtype=torch.double, requires_grad=True)
    w = (torch.randn(*w_shape, dtype=torch.double) * 0.1).requires_grad_()
    b = torch.randn(*b_shape, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: SineAffine.apply(x, w, b, 30.0), (x, w, b))
    torch.testing.assert_close(SineAffine.apply(x, w, b, 30.0), torch.sin(affine(x, w, b, 30.0)))


class _Image:
    """The part of a Signal that a training step uses."""

    def loss(self, values: Tensor, logits: Tensor | None, batch: Batch) -> dict[str, Tensor]:
        return reconstruction_loss(values, logits, batch.target)


def _small(seed: int = 0, fused: bool = True) -> NeuralExperts:
    torch.manual_seed(seed)
    model = NeuralExperts(ModelConfig(2, 3, "sine", 32, 16, 4, 32, 32, "concat"))
    for module in model.modules():
        if isinstance(module, MLP):
            module.act = replace(module.act, fused=fused)
    return model


def _batch(n: int, n_surface: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(1)
    return Batch(torch.rand(n, 2, generator=gen) * 2 - 1, torch.rand(n, 3, generator=gen) * 2 - 1,
                 n_surface)


def _gradients(model: NeuralExperts, batch: Batch, rows: int, compiled: bool = False
               ) -> tuple[list[Tensor], Tensor, tuple[Tensor, Tensor | None]]:
    model.zero_grad(set_to_none=True)
    loss, outputs = accumulate_gradients(make_loss_fn(model, _Image(), 0.0, compiled), batch, rows)
    return [p.grad.clone() for p in model.parameters() if p.grad is not None], loss, outputs


def _assert_same_step(a: tuple[list[Tensor], Tensor, tuple[Tensor, Tensor | None]],
                      b: tuple[list[Tensor], Tensor, tuple[Tensor, Tensor | None]]) -> None:
    assert len(a[0]) == len(b[0]) > 0
    for ga, gb in zip(a[0], b[0], strict=True):
        # float32 sums in another order: compare on the scale of each gradient tensor.
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4 * float(gb.abs().max()))
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[2][0], b[2][0])
    torch.testing.assert_close(a[2][1], b[2][1])


def test_fused_training_gradients_match_plain_autograd() -> None:
    batch = _batch(300)
    _assert_same_step(_gradients(_small(fused=True), batch, 1 << 30),
                      _gradients(_small(fused=False), batch, 1 << 30))


@pytest.mark.parametrize("rows", [64, 100, 299])
def test_micro_batches_give_the_full_batch_step(rows: int) -> None:
    batch = _batch(300)
    _assert_same_step(_gradients(_small(), batch, rows), _gradients(_small(), batch, 1 << 30))


def test_micro_batches_keep_surface_rows_first_and_restore_the_order() -> None:
    batch = _batch(90, n_surface=30)
    parts, order = split_batch(batch, 40)
    assert [p.n_surface for p in parts] == [10, 10, 10]
    assert order is not None and sorted(order.tolist()) == list(range(90))
    for part in parts:
        surface = part.coords[: part.n_surface]
        assert all((batch.coords[:30] == row).all(-1).any() for row in surface)
    # Gradients are the whole batch's, and outputs come back in the batch's row order.
    _, _, (values, logits) = _gradients(_small(), batch, 40)
    whole, whole_logits = _small()(batch.coords)
    torch.testing.assert_close(values, whole.detach())
    assert logits is not None and whole_logits is not None
    torch.testing.assert_close(logits, whole_logits.detach())


def test_compiled_step_matches_eager() -> None:
    batch = _batch(256)
    _assert_same_step(_gradients(_small(), batch, 128, compiled=True),
                      _gradients(_small(), batch, 128))


def test_a_compiled_step_trains_what_each_stage_of_a_fit_trains() -> None:
    """model.fit freezes the manager, unfreezes it, then trains the experts alone, with a new step
    function each time. torch 2.11 on CUDA reused a step traced with the manager frozen, which
    then never trained again; each compiled step must train exactly what an eager one does."""
    batch = _batch(256)
    model, reference = _small(), _small()
    stages = [lambda name: not name.startswith("manager"), lambda name: True,
              lambda name: name.startswith("experts.")]
    for trainable in stages:
        for m in (model, reference):
            for name, parameter in m.named_parameters():
                parameter.requires_grad_(trainable(name))
        _assert_same_step(_gradients(model, batch, 128, compiled=True), _gradients(reference, batch, 128))


@pytest.mark.parametrize("chunk", [1, 7, 2048, 4096, 5000])
def test_routed_chunks_equal_dense(chunk: int) -> None:
    model = _small().eval()
    x = torch.rand(5000, 2) * 2 - 1
    dense, dense_ids = model.predict_dense(x, chunk=5000)
    n = 600 if chunk < 10 else 5000  # one-point chunks are slow: a prefix is enough
    routed, ids = model.predict(x[:n], chunk=chunk)
    assert dense_ids.unique().numel() == 4, "every expert should be exercised"
    assert torch.equal(ids, dense_ids[:n])
    torch.testing.assert_close(routed, dense[:n], rtol=1e-5, atol=1e-6)


def test_balance_loss_is_one_when_even_and_rises_when_collapsed() -> None:
    even = torch.eye(4).repeat(25, 1) * 5
    collapsed = torch.zeros(100, 4)
    collapsed[:, 0] = 5
    assert balance_loss(even).item() == pytest.approx(1.0)
    assert balance_loss(collapsed).item() > 3

"""The fit loop on a real photo: it learns, reports progress, stops when asked, runs every preset."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.fit import (
    Clock,
    FitCanceled,
    FitOptions,
    Progress,
    build_model,
    fit,
    make_loss_fn,
    resolve_device,
)
from model.network import NeuralExperts
from model.presets import PRESETS
from model.signals import Batch, Signal, load_signal
from tests.utils.signals import SDF_LOAD


def test_a_small_fit_of_a_real_photo_learns(kodak_crop: Path, pretrain_cache: Path) -> None:
    signal = load_signal(kodak_crop)
    untrained = signal.evaluate(build_model(signal, FitOptions()).eval())
    reports: list[Progress] = []
    result = fit(signal, FitOptions(steps=150, lr=2e-4), reports.append, cache_dir=pretrain_cache)
    assert result.metrics["psnr"] > untrained["psnr"] + 10, (untrained, result.metrics)
    assert result.metrics["psnr_paper"] == pytest.approx(
        result.metrics["psnr"] - 20 * torch.log10(torch.tensor(2.0)).item()
        + 20 * torch.log10(signal.pixels.abs().max()).item(), abs=1e-3,
    )
    assert 0 < result.metrics["ssim"] <= 1
    assert result.config["parameters"] == 365_968
    training = [r for r in reports if r.stage != "evaluate"]
    assert [r.step for r in training if r.step] == list(range(10, 151, 10))
    assert {r.stage for r in training} == {"pretrain", "fit"}  # the fast preset has one stage
    assert training[-1].eta_s == 0 and training[-1].total == 150
    assert reports[-1].stage == "evaluate" and reports[-1].step == 150  # announced before it runs


def test_stage_two_trains_only_the_experts(
    kodak_crop: Path, pretrain_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 steps with the last half experts-only, against the same fit stopped after stage 1:
    # the encoders and manager must end where stage 1 left them; the experts must move on.
    signal = load_signal(kodak_crop)
    one_stage = replace(PRESETS["fast"], manager_frozen_fraction=0.0)
    monkeypatch.setitem(PRESETS, "one-stage", one_stage)
    monkeypatch.setitem(PRESETS, "two-stage", replace(one_stage, experts_only_fraction=0.5))
    reports: list[Progress] = []
    both = fit(signal, FitOptions(preset="two-stage", steps=10), reports.append,
               cache_dir=pretrain_cache)
    first = fit(signal, FitOptions(preset="one-stage", steps=5), cache_dir=pretrain_cache)
    stage_one = dict(first.model.named_parameters())
    for name, p in both.model.named_parameters():
        same = torch.equal(p.detach(), stage_one[name].detach())
        assert same != name.startswith("experts."), name
    assert [r.stage for r in reports if r.step] == ["experts", "evaluate"]  # step 10: stage 2
    assert all(p.requires_grad for p in both.model.parameters())


def test_the_manager_can_start_frozen_at_its_pretrained_map(
    kodak_crop: Path, pretrain_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal = load_signal(kodak_crop)

    def fitted(steps: int, **changes: float) -> dict[str, torch.Tensor]:
        monkeypatch.setitem(PRESETS, "custom", replace(PRESETS["fast"], **changes))
        model = fit(signal, FitOptions(preset="custom", steps=steps), cache_dir=pretrain_cache).model
        assert all(p.requires_grad for p in model.parameters())
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    def routing(params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [p for name, p in params.items() if name.startswith("manager")]

    pretrained = fitted(1, manager_frozen_fraction=1.0)
    held = fitted(6, manager_frozen_fraction=1.0)
    released = fitted(6, manager_frozen_fraction=0.5)
    assert all(map(torch.equal, routing(held), routing(pretrained)))
    encoder = "expert_encoder.layers.0.weight"
    assert not torch.equal(held[encoder], pretrained[encoder])
    assert not any(map(torch.equal, routing(released), routing(pretrained)))
    # Frozen for half the steps, then experts only for the other half: the manager never moves.
    both = fitted(6, manager_frozen_fraction=0.5, experts_only_fraction=0.5)
    assert all(map(torch.equal, routing(both), routing(pretrained)))


def test_cancellation_stops_between_steps(kodak_crop: Path, pretrain_cache: Path) -> None:
    signal = load_signal(kodak_crop)
    fit(signal, FitOptions(steps=1), cache_dir=pretrain_cache)  # pretraining now comes from the cache
    calls = iter(range(1000))
    with pytest.raises(FitCanceled, match="canceled at step 3 of 50"):
        fit(signal, FitOptions(steps=50), should_stop=lambda: next(calls) >= 3,
            cache_dir=pretrain_cache)


def test_cancellation_stops_manager_pretraining_and_caches_nothing(kodak_crop: Path,
                                                                    tmp_path: Path) -> None:
    signal = load_signal(kodak_crop)
    calls = iter(range(1000))
    with pytest.raises(FitCanceled, match="pretraining step 3 of 3000"):
        fit(signal, FitOptions(preset="paper", steps=10), should_stop=lambda: next(calls) >= 3,
            cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pretraining_is_cached_and_reused(kodak_crop: Path, tmp_path: Path) -> None:
    signal = load_signal(kodak_crop)
    first = fit(signal, FitOptions(steps=1), cache_dir=tmp_path)
    cached = list(tmp_path.glob("manager-*.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = fit(signal, FitOptions(steps=1), cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == stamp
    x = signal.grid.coords()
    assert torch.equal(first.model.predict(x)[1], second.model.predict(x)[1])


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("model", ["neural-experts", "siren"])
def test_every_preset_runs_two_steps(
    name: str, model: str, kodak_crop: Path, pretrain_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every preset's code path, with its pretraining shortened: 2 steps prove it runs.
    monkeypatch.setitem(PRESETS, name, replace(PRESETS[name], pretrain_steps=5))
    result = fit(load_signal(kodak_crop), FitOptions(preset=name, steps=2, model=model),
                 cache_dir=pretrain_cache)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())


def test_bad_fit_options_are_refused(kodak_crop: Path) -> None:
    signal = load_signal(kodak_crop)
    with pytest.raises(ValueError, match="unknown preset"):
        fit(signal, FitOptions(preset="slow"))
    with pytest.raises(ValueError, match="lr must be a finite number above 0"):
        fit(signal, FitOptions(lr=-1.0))
    with pytest.raises(ValueError, match="siren has a single decoder"):
        fit(signal, FitOptions(model="siren", experts=4))


def test_resolving_the_device_leaves_cuda_uninitialised(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker's parent resolves NEXP_DEVICE before it forks job children, which could not use a
    # CUDA that it had initialised (torch.cuda.is_available() initialises it; NVML's count does not).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("is_available() initialises CUDA"))
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert not torch.cuda.is_initialized()


# --------------------------------------------------------------------------- sparse training


def _image_and_sdf(kodak_crop: Path, spot: Path) -> list[Signal]:
    return [load_signal(kodak_crop), load_signal(spot, **SDF_LOAD)]


def _loss_and_grads(model: NeuralExperts, signal: Signal, batch: Batch, top_k: int | None
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A training step's loss (balance term included) and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    loss, _, _ = make_loss_fn(model, signal, 0.01, False, top_k)(
        batch.coords, batch.target, batch.n_surface)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_sparse_training_with_k_equal_to_K_is_the_dense_loss(kodak_crop: Path, spot: Path) -> None:
    # The paper's q-weighted loss over all K experts, with the balance term: the sparse path at
    # k = K must give the same loss and the same gradient on every parameter, for both losses.
    for signal in _image_and_sdf(kodak_crop, spot):
        model = build_model(signal, FitOptions(experts=4))
        batch = signal.batch(torch.Generator().manual_seed(0), 512)
        dense, dense_grads = _loss_and_grads(model, signal, batch, None)
        sparse, sparse_grads = _loss_and_grads(model, signal, batch, 4)
        assert torch.allclose(sparse, dense, rtol=1e-5), signal.kind
        assert len(sparse_grads) == len(dense_grads) == len(list(model.parameters()))
        for s, d in zip(sparse_grads, dense_grads, strict=True):
            # Float32 sums in another order: equal to ~1e-6 of each tensor's largest entry.
            assert torch.allclose(s, d, rtol=1e-4, atol=1e-5 * float(d.abs().max())), signal.kind


def test_sparse_training_runs_each_point_through_its_top_k_experts_only(kodak_crop: Path) -> None:
    signal = load_signal(kodak_crop)
    model = build_model(signal, FitOptions(experts=8))
    x = signal.grid.coords()
    values, top_logits, logits = model.forward_top_k(x, 2)
    dense, _ = model(x)
    top, ids = logits.topk(2, dim=-1)
    assert torch.equal(top_logits, top) and torch.equal(ids[:, 0], logits.argmax(-1))
    expected = dense.gather(0, ids.T[..., None].expand(-1, -1, dense.shape[-1]))
    assert torch.allclose(values, expected, atol=1e-6)
    # Only the chosen experts get a gradient; an expert no point ranks in its top 2 gets zeros.
    values.sum().backward()
    grad = model.experts.layers[0].weight.grad
    assert grad is not None
    chosen = set(ids.unique().tolist())
    for k in range(8):
        assert bool(grad[k].any()) == (k in chosen), k


@pytest.mark.parametrize("kind", ["image", "audio", "sdf"])
def test_a_sparse_fit_learns_every_kind(kind: str, kodak_crop: Path, bach: Path, spot: Path,
                                        pretrain_cache: Path) -> None:
    signal = {"image": lambda: load_signal(kodak_crop), "audio": lambda: load_signal(bach),
              "sdf": lambda: load_signal(spot, **SDF_LOAD)}[kind]()
    reports: list[Progress] = []
    result = fit(signal, FitOptions(steps=20, top_k=1), reports.append, cache_dir=pretrain_cache)
    losses = [r.loss for r in reports if r.step]
    assert losses[-1] < losses[0], losses
    assert result.config["fit"]["top_k"] == 1


def test_top_k_is_checked_against_the_model(kodak_crop: Path) -> None:
    signal = load_signal(kodak_crop)
    with pytest.raises(ValueError, match="top_k must be 1 to K = 4"):
        fit(signal, FitOptions(top_k=5))
    with pytest.raises(ValueError, match="top_k must be 1 to 32"):
        FitOptions(top_k=0)


# --------------------------------------------------------------------------- fits by budget


def test_a_budgeted_fit_stops_at_its_budget(kodak_crop: Path, pretrain_cache: Path) -> None:
    signal = load_signal(kodak_crop)
    fit(signal, FitOptions(steps=1), cache_dir=pretrain_cache)  # pretraining from the cache
    reports: list[Progress] = []
    started = time.perf_counter()
    result = fit(signal, FitOptions(time_budget_s=2.5), reports.append, cache_dir=pretrain_cache)
    training = [r for r in reports if r.step]
    assert result.stop_reason == "budget" and result.record["stop_reason"] == "budget"
    assert 2.5 <= time.perf_counter() - started < 6  # the budget, then one evaluation
    assert all(0 <= r.eta_s <= 2.5 for r in training)
    assert training[-1].eta_s == 0 and training[-1].total == training[-1].step
    assert training[-1].step > 10  # not stopped early: a 32 x 32 step takes milliseconds


def test_a_budget_cuts_a_long_pretraining_short(kodak_crop: Path, tmp_path: Path) -> None:
    # The paper preset pretrains the manager 3000 steps (~15 s here): a 3 s budget gives it its
    # share and fits with the rest, and the cut-short weights are not cached as the full ones.
    signal = load_signal(kodak_crop)
    fit(signal, FitOptions(steps=1))  # torch's first optimiser and step set-up: a second or two
    reports: list[Progress] = []
    started = time.perf_counter()
    result = fit(signal, FitOptions(preset="paper", time_budget_s=3.0), reports.append,
                 cache_dir=tmp_path)
    assert result.stop_reason == "budget" and time.perf_counter() - started < 7
    assert max(r.step for r in reports if r.stage == "fit") > 10
    assert not list(tmp_path.iterdir())


def test_the_schedule_is_laid_over_the_budget() -> None:
    now = [0.0]
    clock = Clock(steps=300, max_steps=None, budget_s=100.0, started=0.0, now=lambda: now[0])
    now[0] = 10.0  # pretraining took a tenth: the schedule spans the 90 s left
    clock.start_training()
    now[0] = 55.0
    assert clock.position(5) == pytest.approx(150.0)
    assert clock.eta_s(5) == pytest.approx(45.0) and clock.stop_reason(5) is None
    now[0] = 100.0
    assert clock.position(9) == 300.0 and clock.stop_reason(9) == "budget"
    # Steps alone are today's schedule; with both, the further clock leads and the first ends it.
    steps_only = Clock(300, None, None, 0.0)
    assert steps_only.position(42) == 42 and steps_only.stop_reason(300) == "steps"
    both = Clock(steps=50, max_steps=50, budget_s=100.0, started=0.0, now=lambda: now[0])
    now[0] = 0.0
    both.start_training()
    now[0] = 10.0
    assert both.position(20) == 20 and both.stop_reason(50) == "steps"


def test_a_target_fit_stops_at_its_target(kodak_crop: Path, pretrain_cache: Path) -> None:
    signal = load_signal(kodak_crop)
    reports: list[Progress] = []
    result = fit(signal, FitOptions(steps=300, target_psnr=33.0), reports.append,
                 cache_dir=pretrain_cache)
    training = [r for r in reports if r.step and r.stage != "evaluate"]
    assert result.stop_reason == "target"
    assert training[-1].metric >= 33.0 > max(r.metric for r in training[:-1])  # the first to reach it
    assert training[-1].step < 300 and training[-1].eta_s == 0


def test_a_target_needs_a_psnr(spot: Path) -> None:
    with pytest.raises(ValueError, match="target_psnr applies to image and audio fits, not sdf"):
        fit(load_signal(spot, **SDF_LOAD), FitOptions(target_psnr=30.0))
    with pytest.raises(ValueError, match="target_psnr must be 1 to 200 dB"):
        FitOptions(target_psnr=500.0)
    with pytest.raises(ValueError, match="time_budget_s must be a finite number above 0"):
        FitOptions(time_budget_s=-1.0)

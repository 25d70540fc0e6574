"""The fit loop on a real photo: it learns, reports progress, stops when asked, runs every preset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.fit import FitCanceled, FitOptions, Progress, build_model, fit, resolve_device
from model.presets import PRESETS
from model.signals import load_signal


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
    assert [r.step for r in reports if r.step] == list(range(10, 151, 10))
    assert {r.stage for r in reports} == {"pretrain", "fit"}  # the fast preset has one stage
    assert reports[-1].eta_s == 0 and reports[-1].total == 150


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
    assert [r.stage for r in reports if r.step] == ["experts"]  # step 10 is in stage 2
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
    with pytest.raises(ValueError, match="lr must be > 0"):
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

"""Snapshots: a fit resumed from one ends where the uninterrupted fit ends, whatever its stage."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.fit import FitOptions, fit
from model.presets import PRESETS
from model.signals import load_signal
from model.snapshot import FitSnapshot, read_position

STEPS = 12  # manager frozen for steps 1-3, all parameters 4-6, experts alone 7-12


@pytest.fixture
def two_stage(monkeypatch: pytest.MonkeyPatch) -> FitOptions:
    schedule = replace(PRESETS["fast"], manager_frozen_fraction=0.25, experts_only_fraction=0.5)
    monkeypatch.setitem(PRESETS, "two-stage", schedule)
    return FitOptions(preset="two-stage", steps=STEPS, device="cpu")


def test_a_snapshot_survives_bytes(kodak_crop: Path, pretrain_cache: Path, two_stage: FitOptions) -> None:
    signal = load_signal(kodak_crop)
    taken: list[FitSnapshot] = []
    fit(signal, two_stage, cache_dir=pretrain_cache, on_snapshot=taken.append, snapshot_every_s=1e-9)
    assert [s.step for s in taken] == list(range(1, STEPS))  # none after the last step
    data = taken[-1].to_bytes()
    assert not data.startswith(b"\x80")  # a safetensors header, not a pickle
    again = FitSnapshot.from_bytes(data)
    assert again.position == taken[-1].position and again.position.stage == "experts"
    assert all(torch.equal(again.model_state[k], v) for k, v in taken[-1].model_state.items())
    assert torch.equal(again.batch_rng, taken[-1].batch_rng)
    assert again.adam_state.keys() == taken[-1].adam_state.keys() and again.adam_state
    with pytest.raises(ValueError, match="not a fit snapshot"):
        FitSnapshot.from_bytes(data[:8] + b'{"__metadata__":{}}'.ljust(len(data) - 8))
    assert read_position(io.BytesIO(data)) == again.position  # from the header alone
    assert again.config["kind"] == "image" and again.config["signal"]["width"] == 32


@pytest.mark.parametrize("at_step", [2, 5, 9])  # manager frozen, all parameters, experts alone
def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(
        kodak_crop: Path, pretrain_cache: Path, two_stage: FitOptions, at_step: int) -> None:
    signal = load_signal(kodak_crop)
    taken: dict[int, bytes] = {}
    whole = fit(signal, two_stage, cache_dir=pretrain_cache, snapshot_every_s=1e-9,
                on_snapshot=lambda s: taken.setdefault(s.step, s.to_bytes()))
    resumed = fit(signal, two_stage, resume=FitSnapshot.from_bytes(taken[at_step]))
    assert resumed.history[-1].step == STEPS and [p.step for p in resumed.history] == [10, 12]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert resumed.metrics["psnr"] == pytest.approx(whole.metrics["psnr"], abs=1e-3)
    assert all(p.requires_grad for p in resumed.model.parameters())


def test_a_snapshot_from_another_kind_of_device_resumes_with_new_batches(
        kodak_crop: Path, pretrain_cache: Path, two_stage: FitOptions) -> None:
    signal = load_signal(kodak_crop)
    taken: list[FitSnapshot] = []
    fit(signal, two_stage, cache_dir=pretrain_cache, on_snapshot=taken.append, snapshot_every_s=1e-9)
    assert taken[4].position.device_type == "cpu"
    from_gpu = replace(taken[4], position=replace(taken[4].position, device_type="cuda"),
                       batch_rng=torch.zeros(16, dtype=torch.uint8))  # a CUDA generator's state
    resumed = fit(signal, two_stage, resume=from_gpu)
    assert resumed.history[-1].step == STEPS and resumed.metrics["psnr"] > 0

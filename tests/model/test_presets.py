"""Presets: the paper's protocol verbatim, per-task rates, user overrides."""

from __future__ import annotations

from model.presets import PRESETS


def test_paper_preset_is_the_papers_protocol() -> None:
    paper = PRESETS["paper"]
    assert (paper.steps, paper.lr, paper.lr_gamma, paper.experts_only_fraction) == (30_000, 1e-5, 0.9999, 0.2)
    assert (paper.pretrain, paper.pretrain_steps, paper.balance_weight) == ("random", 3000, 0.0)
    assert paper.for_task("audio") == paper


def test_a_task_rate_replaces_the_preset_rate_for_that_task_only() -> None:
    fast = PRESETS["fast"]
    rates = dict(fast.task_lr)
    assert fast.for_task("image").lr == fast.lr
    for task, lr in rates.items():
        assert fast.for_task(task).lr == lr


def test_an_explicit_lr_applies_to_every_task() -> None:
    fast = PRESETS["fast"].with_overrides(steps=5, lr=3e-4)
    assert fast.steps == 5
    assert {fast.for_task(task).lr for task in ("image", "audio", "sdf")} == {3e-4}

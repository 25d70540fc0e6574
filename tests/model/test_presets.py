"""Presets: the paper's protocol verbatim, per-task changes, user overrides."""

from __future__ import annotations

from dataclasses import replace

from model.presets import PRESETS, PRESETS_HELP


def test_paper_preset_is_the_papers_protocol() -> None:
    paper = PRESETS["paper"]
    assert (paper.steps, paper.lr, paper.lr_gamma, paper.experts_only_fraction) == (30_000, 1e-5, 0.9999, 0.2)
    assert (paper.pretrain, paper.pretrain_steps, paper.balance_weight) == ("random", 3000, 0.0)
    assert paper.for_task("audio") == paper


def test_task_changes_apply_to_that_task_only() -> None:
    fast = PRESETS["fast"]
    assert fast.for_task("image") == replace(fast, task_changes=())
    for task in ("audio", "sdf", "sdf-small"):
        changed = fast.for_task(task)
        assert (changed.lr, changed.manager_frozen_fraction) == (3e-4, 0.0)
        assert replace(changed, lr=fast.lr, manager_frozen_fraction=fast.manager_frozen_fraction,
                       task_changes=fast.task_changes) == fast


def test_an_explicit_lr_applies_to_every_task() -> None:
    fast = PRESETS["fast"].with_overrides(steps=5, lr=3e-4)
    assert fast.steps == 5
    assert {fast.for_task(task).lr for task in ("image", "audio", "sdf")} == {3e-4}
    assert fast.for_task("audio").manager_frozen_fraction == 0.0  # other task changes stay


def test_the_presets_help_describes_every_preset() -> None:
    assert all(f"{name}:" in PRESETS_HELP for name in PRESETS)

"""Presets: the paper's protocol verbatim, per-task changes, user overrides."""

from __future__ import annotations

from dataclasses import replace

import pytest

from model.fit import FitOptions, build_model
from model.network import ModelConfig
from model.presets import MAX_EXPERTS, PRESETS, PRESETS_HELP, model_config, sized_config
from model.signals.base import Grid


def test_paper_preset_is_the_papers_protocol() -> None:
    paper = PRESETS["paper"]
    assert (paper.steps, paper.lr, paper.lr_gamma, paper.experts_only_fraction) == (30_000, 1e-5, 0.9999, 0.2)
    assert (paper.pretrain, paper.pretrain_steps, paper.balance_weight) == ("random", 3000, 0.0)
    assert paper.for_task("audio") == paper


def test_task_changes_apply_to_that_task_only() -> None:
    fast = PRESETS["fast"]
    assert fast.for_task("image") == replace(fast, batch_points=16_384, task_changes=())
    for task in ("audio", "sdf", "sdf-small"):
        changed = fast.for_task(task)
        assert (changed.lr, changed.manager_frozen_fraction, changed.time_budget_s) == (3e-4, 0.0, 120.0)
        batch = 16_384 if task == "audio" else fast.batch_points  # audio's grid, as images'
        assert changed.batch_points == batch
        steps, gamma = (1200, 0.995**0.25) if task == "audio" else (300, 0.995)  # same decay
        assert (changed.steps, changed.lr_gamma) == (steps, pytest.approx(gamma))
        assert replace(changed, lr=fast.lr, manager_frozen_fraction=fast.manager_frozen_fraction,
                       time_budget_s=None, batch_points=fast.batch_points, steps=fast.steps,
                       lr_gamma=fast.lr_gamma, task_changes=fast.task_changes) == fast


def test_explicit_steps_and_lr_apply_to_every_task() -> None:
    fast = PRESETS["fast"].with_overrides(steps=5, lr=3e-4)
    assert {fast.for_task(task).steps for task in ("image", "audio", "sdf")} == {5}
    assert {fast.for_task(task).lr for task in ("image", "audio", "sdf")} == {3e-4}
    assert fast.for_task("audio").manager_frozen_fraction == 0.0  # other task changes stay


def test_the_presets_help_describes_every_preset() -> None:
    assert all(f"{name}:" in PRESETS_HELP for name in PRESETS)


@pytest.mark.parametrize(
    ("task", "shape", "experts", "encoding"),
    [
        ("image", (128, 128), 4, "mlp"),  # the paper's size: the paper's model
        ("image", (256, 256), 8, "grid"),
        ("image", (512, 768), 16, "grid"),  # full-size Kodak
        ("image", (4096, 4096), MAX_EXPERTS, "grid"),
        ("audio", (88_200,), 4, "grid"),  # audio: the grid at any length
        ("audio", (60 * 44_100,), 8, "grid"),  # a minute at 44.1 kHz
        ("sdf", (250_000,), 8, "mlp"),  # never fewer than the paper's K = 8
        ("sdf", (1_000_000,), 16, "mlp"),
    ],
)
def test_the_size_rule_gives_its_documented_sizes(task: str, shape: tuple[int, ...], experts: int,
                                                  encoding: str) -> None:
    in_dim, out_dim = {"image": (2, 3), "audio": (1, 1), "sdf": (3, 1)}[task]
    config = sized_config(task, in_dim, out_dim, shape)
    assert (config.n_experts, config.encoding) == (experts, encoding)
    paper = model_config("neural-experts", "sdf-small" if task == "sdf" else task, in_dim, out_dim)
    if encoding == "mlp":  # only K differs from the paper's architecture (3D: its small one)
        assert config == ModelConfig(**{**paper.to_dict(), "n_experts": experts})
    else:
        widths = (config.expert_width, config.manager_width)
        assert (*widths, config.grid_finest_resolution) == (64, 64, max(shape))


def test_the_grid_table_holds_a_quarter_to_half_of_the_pixels_within_bounds() -> None:
    assert sized_config("image", 2, 3, (512, 768)).grid_log2_table == 17  # 2^17 = 393,216 / 3
    assert sized_config("image", 2, 3, (4096, 4096)).grid_log2_table == 19  # the upper bound
    assert sized_config("image", 2, 3, (512, 768), n_experts=6).n_experts == 6  # --experts wins


class _Image:
    kind, task, in_dim, out_dim = "image", "image", 2, 3
    grid = Grid((512, 768), -1.0, 1.0)

    def meta(self) -> dict[str, int]:
        return {"height": 512, "width": 768}


@pytest.mark.parametrize("model", ["neural-experts", "siren", "vanilla-moe"])
def test_the_paper_preset_and_the_baselines_keep_the_papers_architectures(model: str) -> None:
    paper = build_model(_Image(), FitOptions(preset="paper", model=model))  # type: ignore[arg-type]
    assert paper.config == model_config(model, "image", 2, 3)
    fast = build_model(_Image(), FitOptions(model=model))  # type: ignore[arg-type]
    assert (fast.config.encoding == "grid") == (model == "neural-experts")

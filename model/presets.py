"""Registries of named configurations: model architectures per task, and fit schedules.

Architectures follow docs/method.md#sizes ("W x 2" = 4 linear layers of width W). A task is the
family of signal a model is built for: image (2 -> 3 or 2 -> 1), audio (1 -> 1), sdf (3 -> 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from model.network import Conditioning, ModelConfig
from model.pretrain import PRETRAIN_LR

# (encoder, expert, manager encoder, manager, K) widths per task for Neural Experts.
_EXPERTS_WIDTHS: dict[str, tuple[int, int, int, int, int]] = {
    "image": (128, 128, 128, 128, 4),
    "audio": (128, 128, 128, 128, 4),  # docs/method.md#sizes: as the image model (~365k parameters)
    "sdf": (512, 64, 128, 128, 8),  # 3D large: 1,285,904 parameters
    "sdf-small": (256, 32, 64, 64, 8),  # 3D small: 323,472 parameters
}

# (encoder width, decoder width) of the SIREN baselines: Base, Wider, and the 3D 8-layer nets.
_SIREN_WIDTHS: dict[tuple[str, str], tuple[int, int]] = {
    ("siren", "image"): (128, 128),
    ("siren", "audio"): (128, 128),
    ("siren-wider", "image"): (128, 512),
    ("siren-wider", "audio"): (128, 512),
    ("siren", "sdf"): (512, 512),
    ("siren", "sdf-small"): (256, 256),
}

MODELS = ("neural-experts", "vanilla-moe", "siren", "siren-wider")
MAX_EXPERTS = 32
"""The paper's ablation tried 2 to 8 experts. Training runs every expert on every point, so a
step costs about K / 4 times the default's: 32 is already 8x, and K = 1000 was an upload away
from a 50M-parameter model with gigabytes of activations per layer."""


def model_config(
    model: str,
    task: str,
    in_dim: int,
    out_dim: int,
    activation: str = "sine",
    n_experts: int | None = None,
) -> ModelConfig:
    """The paper's architecture for `model` on `task`, optionally with another K or activation."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if model.startswith("siren"):
        if (model, task) not in _SIREN_WIDTHS:
            raise ValueError(f"model {model!r} is not defined for {task} signals")
        if n_experts not in (None, 1):
            raise ValueError(f"{model} has a single decoder; --experts does not apply")
        encoder, decoder = _SIREN_WIDTHS[(model, task)]
        return ModelConfig(in_dim, out_dim, activation, encoder, decoder, n_experts=1)
    if task not in _EXPERTS_WIDTHS:
        raise ValueError(f"unknown task {task!r}")
    encoder, expert, manager_encoder, manager, k = _EXPERTS_WIDTHS[task]
    k = n_experts if n_experts is not None else k
    if not 2 <= k <= MAX_EXPERTS:
        raise ValueError(f"{model} takes 2 to {MAX_EXPERTS} experts, got {k}")
    conditioning: Conditioning = "none" if model == "vanilla-moe" else "concat"
    return ModelConfig(
        in_dim, out_dim, activation, encoder, expert, k, manager_encoder, manager, conditioning
    )


@dataclass(frozen=True)
class FitPreset:
    """A fit schedule. Every field has a reason; `paper` is the protocol of docs/method.md#schedule."""

    steps: int
    """Optimisation steps (full batch for images/audio, fresh samples per step for SDF)."""
    lr: float
    """Adam learning rate, betas (0.9, 0.999)."""
    lr_gamma: float
    """ExponentialLR decay per step."""
    experts_only_fraction: float
    """Final fraction of steps training only the experts, with a fresh Adam state."""
    pretrain: str
    """Manager pretraining: random (the paper), grid, kmeans or none."""
    pretrain_steps: int
    """Full-batch steps of manager pretraining (cached per shape and K, so paid once)."""
    pretrain_max_points: int
    """Cap on pretraining points: larger signals pretrain on a random subset of this size."""
    pretrain_lr: float = PRETRAIN_LR
    """Adam learning rate of manager pretraining."""
    manager_frozen_fraction: float = 0.0
    """First fraction of steps with the manager and its encoder held at their pretrained map, so
    each expert first learns its own region before the manager may move points between them."""
    balance_weight: float = 0.0
    """Weight of a load-balancing term (0 in the paper) keeping experts in use at higher lr."""
    batch_points: int = 1 << 30
    """Points per step: signals larger than this train on a fresh random subset each step."""
    report_every: int = 10
    """Steps between progress reports (each costs a host sync for the loss)."""
    task_changes: tuple[tuple[str, str, float], ...] = ()
    """(task, field, value): what signals of that task run differently, e.g. a rate tuned for
    images can stall audio, whose coordinates span [-100, 100] (see the fast preset)."""

    def with_overrides(self, steps: int | None = None, lr: float | None = None) -> FitPreset:
        """A user's steps / lr; an explicit lr applies to every task."""
        return replace(
            self,
            steps=self.steps if steps is None else steps,
            lr=self.lr if lr is None else lr,
            task_changes=tuple(c for c in self.task_changes if lr is None or c[1] != "lr"),
        )

    def for_task(self, task: str) -> FitPreset:
        """This schedule as a fit of a `task` signal runs it: with that task's changes."""
        changes: dict[str, Any] = {name: value for t, name, value in self.task_changes if t == task}
        return replace(self, **changes, task_changes=())


def for_tasks(tasks: tuple[str, ...], **changes: float) -> tuple[tuple[str, str, float], ...]:
    """FitPreset.task_changes giving each of `tasks` the same `changes`."""
    return tuple((task, name, value) for task in tasks for name, value in changes.items())


PRESETS: dict[str, FitPreset] = {
    # docs/method.md#schedule: Adam lr 1e-5, gamma 0.9999, 30k steps, last 20% experts only,
    # ~3000 pretraining steps.
    "paper": FitPreset(
        steps=30_000, lr=1e-5, lr_gamma=0.9999, experts_only_fraction=0.2,
        pretrain="random", pretrain_steps=3000, pretrain_max_points=1 << 30,
    ),
    # A short schedule for seconds-to-minutes fits. Measured on Kodak at the paper's 128 x 128
    # protocol, 300 steps, 2 threads (bench/RESULTS.md, sections "fast" and "quality"; PSNR on
    # [0, 1], mean of kodim19 / kodim05 / kodim23 / kodim08):
    # - this preset: 60.8 dB, three or four experts in use on each image; SIREN Base on the same
    #   schedule 53.6 (at gamma 0.9995: 43.0; at lr 5e-4: 45.6). The paper's schedule at 300
    #   steps, each model at its best rate, on kodim19: SIREN Base 51.5, Wider 53.6, NE 46.6.
    # - the manager frozen at its pretrained bands for the first 30% of steps: each expert first
    #   learns its band. With the manager trained from step 1, one or two experts took every
    #   pixel within 300 steps (59.0 dB); frozen throughout: 48.8, so the manager's moves matter;
    #   frozen for 20% / 50% (kodim19 and kodim05 only): 57.6 / 58.6 against 59.1 at 30%.
    # - grid (band) pretraining. The paper's random map, frozen 30% too, did better here (63.9,
    #   four experts on every image), but a per-pixel random map is learnable only where the
    #   image has no more pixels than pretraining sees (pretrain_max_points); bands work at any
    #   size. Trained from step 1, the random map collapsed onto one expert (kodim19, kodim05).
    #   A random map over coarse cells (<= 16k cells, ~5 x 5 pixels each) on the full 768 x 512
    #   kodim19: 27.5 dB with two experts owning 98% of the pixels, against bands' 27.9 with all
    #   four in use, so bands stay.
    # - lr 1e-3, SIREN's best rate here too (2e-3 diverged for both models), decayed to 22% over
    #   the 300 steps (gamma 0.995; 0.9995: 40.4, one image diverged).
    # - no experts-only stage: its fresh Adam state at lr ~1e-3 knocked the fit back (51.2).
    # - audio and 3D train their manager from step 1: frozen for 30%, Neural Experts went from
    #   MSE x1e-4 4.23 / 16.8 / 1.45 to 4.39 / 17.8 / 1.52 on the three clips, and on spot from
    #   trimap IoU 0.485 to 0.346 (`python -m bench audio sdf`, 2026-11-26).
    # - audio at 3e-4: on bach (300 steps of 16k sampled points) 1e-3 left both models at the
    #   signal's variance (MSE 0.024); Neural Experts / SIREN reached 4.3e-4 / 5.8e-4 at 3e-4,
    #   9.0e-4 / 1.0e-3 at 1e-4.
    # - 3D at 3e-4: on spot (small models, 300 steps of 30k points) 1e-3 left the shape unformed
    #   (IoU 0.28 / 0.05, Neural Experts / SIREN); at 3e-4: IoU 0.990 / 0.977, trimap IoU 0.485 /
    #   0.409, Chamfer x1e5 15 / 2042; at 1e-4: 0.991 / 0.988, 0.439 / 0.378, 308 / 607.
    # - 20 pretraining steps at 3e-4 reproduce 99.9% of the band labels (the random map needs
    #   ~60 for 99%): about 2 s, so a first fit of a new shape hides no pretraining.
    "fast": FitPreset(
        steps=300, lr=1e-3, lr_gamma=0.995, experts_only_fraction=0.0, manager_frozen_fraction=0.3,
        pretrain="grid", pretrain_steps=20, pretrain_max_points=16_384, pretrain_lr=3e-4,
        batch_points=65_536,
        task_changes=for_tasks(("audio", "sdf", "sdf-small"), lr=3e-4, manager_frozen_fraction=0.0),
    ),
}


PRESETS_HELP = (
    "Fit schedule. fast: 300 steps (a 128 x 128 image: about 80 s on a 2-core CPU; a 3D shape: "
    "minutes); paper: the paper's protocol, 30k steps at lr 1e-5, meant for a GPU (a 128 x 128 "
    "image: about 3 minutes on an H200)."
)


def preset(name: str) -> FitPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

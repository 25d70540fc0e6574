"""Registries of named configurations: model architectures per task, and fit schedules.

Architectures follow docs/method.md#sizes ("W x 2" = 4 linear layers of width W). A task is the
family of signal a model is built for: image (2 -> 3 or 2 -> 1), audio (1 -> 1), sdf (3 -> 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from model.network import Conditioning, ModelConfig
from model.pretrain import PRETRAIN_LR, Pretraining

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
"""The paper's ablation tried 2 to 8 experts. Dense training runs every expert on every point, so
a step costs about K / 4 times the default's (32 is already 8x; sparse top-k keeps it near flat,
bench "sparse"), and K = 1000 was an upload away from a 50M-parameter model."""


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


# --------------------------------------------------------------------------- the size rule
# docs/method.md#the-size-rule. The paper's models were sized for its signals; a signal with g
# times as many points gets K = K_paper * 2^floor(log2(g) / 2) experts (twice as many per 4x
# the points; K_paper is the task's K in the paper's table), up to MAX_EXPERTS. Images beyond the
# paper's 128 x 128 and audio of any length get a hash-grid expert encoder, a table of a quarter
# to half their points per level (sine MLPs capped what a fit reached in a budget: bench/RESULTS.md,
# "realsize"); 3D starts from the paper's small model.

PAPER_POINTS: dict[str, int] = {
    "image": 128 * 128,  # the paper's Kodak crops
    "audio": 1 << 18,  # ~6 s at 44.1 kHz: the SIREN clips run 3.7 to 12 s
    "sdf": 250_000,  # surface samples this code takes from a mesh (docs/method.md, 3D inputs)
}
DEFAULT_BUDGET_S = 120.0
"""The fast preset's cap on an audio or 3D fit: 300 steps of a large clip or mesh ran past 12
minutes on a 2-core CPU (issue 13); a GPU ends at the steps well before it."""
FAST_STEPS, FAST_LR_GAMMA = 300, 0.995  # the fast preset's steps and decay (see PRESETS)
AUDIO_STEPS = 1200
"""The fast preset's steps for audio, with its lr decay stretched to match (to 22% at the end, as
FAST_STEPS at FAST_LR_GAMMA): a grid-encoded clip keeps gaining past 300 steps, which a CPU reached
in ~100 of its 120 s. A minute of speech on 2 cores: 406 steps by the budget to MSE 4.0e-4,
against 5.6e-4 at 300 steps; a GPU ends at the steps well before the budget."""
GRID_BATCH_POINTS = 16_384
"""Points per step of a grid-encoded fit (a 128 x 128 image whole): more, shorter steps in a
budget; on full-size kodim19 the rule's model reached 29.3 dB in 60 CPU-seconds with it, 22.7
with 65,536 (docs/method.md, "The size rule")."""
DENSE_MAX_EXPERTS = 4
"""The paper's K: up to it a fit keeps the dense loss; past it a dense step costs ~K / 4 times."""
SIZED_WIDTH = 64
"""Expert, manager-encoder and manager width of a grid-encoded model: the grid holds the detail,
so narrow MLPs suffice (instant-ngp's MLPs are 64 wide)."""
GRID_TABLE_LOG2 = (14, 19)  # bounds on log2 of a level's table rows: 16k .. 512k
GRID_PAST_POINTS = {"image": PAPER_POINTS["image"], "audio": 0}
"""Signals with more points than this get the grid encoder. An image up to 128 x 128 keeps the
paper's sine model (~60 dB in 300 steps); audio gets the grid at any length: on the 3.7 s
two-speakers clip, 60 CPU-seconds reached MSE 2.5e-5 against 2.5e-3 for the sine model and
2.0e-4 for SIREN. 3D has none: its loss needs gradients through the encoding."""
GRID_BOUNDS = {"image": 1.0, "audio": 100.0}  # coordinates span [-bound, bound] (model/signals/*)
SIZED_BASE = {"sdf": "sdf-small"}
"""The paper's architecture a size-aware fit starts from, where not the task's own: on spot in a
120 s CPU budget the large 3D model ran 31 steps to IoU 0.45, the small one 134 to IoU 0.97
(bench/RESULTS.md, "realsize")."""


def sized_experts(task: str, points: int) -> int:
    """K for a signal of `points` points (pixels, samples, 3D input points)."""
    paper_k = _EXPERTS_WIDTHS[task][-1]  # never fewer than the paper's table gives
    growth = max(1.0, points / PAPER_POINTS[_family(task)])
    return min(MAX_EXPERTS, paper_k * 2 ** math.floor(math.log2(growth) / 2))


def sized_config(task: str, in_dim: int, out_dim: int, shape: tuple[int, ...],
                 activation: str = "sine", n_experts: int | None = None) -> ModelConfig:
    """The default preset's model for a signal of grid `shape` (images, audio) or `(points,)`
    (3D): the paper's architecture (3D: its small one) up to the paper's signal size, then more
    experts; past GRID_PAST_POINTS a hash-grid encoder sized from the points. `n_experts` (the
    user's --experts) wins."""
    points = math.prod(shape)
    base = model_config("neural-experts", SIZED_BASE.get(task, task), in_dim, out_dim, activation,
                        n_experts)
    k = n_experts if n_experts is not None else sized_experts(task, points)
    family = _family(task)
    if points <= GRID_PAST_POINTS.get(family, math.inf):
        return replace(base, n_experts=k)
    log2_table = min(max(math.ceil(math.log2(points)) - 2, GRID_TABLE_LOG2[0]), GRID_TABLE_LOG2[1])
    return replace(
        base, n_experts=k, expert_width=SIZED_WIDTH, manager_encoder_width=SIZED_WIDTH,
        manager_width=SIZED_WIDTH, encoding="grid", grid_log2_table=log2_table,
        grid_finest_resolution=max(shape), grid_bound=GRID_BOUNDS[family],
    )


def _family(task: str) -> str:
    return "sdf" if task.startswith("sdf") else task


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
    size_aware: bool = False
    """Neural Experts sized from the signal (`sized_config`) instead of the paper's table."""
    sparse_top_k: int | None = None
    """Experts each point trains when K exceeds DENSE_MAX_EXPERTS and the user set no --top-k
    (None: the paper's dense loss). k = 2 matched dense at K = 4 (bench "sparse")."""
    time_budget_s: float | None = None
    """Seconds a fit may take when the user sets neither steps nor a budget: it then ends at the
    preset's steps or this budget, whichever comes first (None: the steps alone)."""
    task_changes: tuple[tuple[str, str, float], ...] = ()
    """(task, field, value): what signals of that task run differently, e.g. a rate tuned for
    images can stall audio, whose coordinates span [-100, 100] (see the fast preset)."""

    def with_overrides(self, steps: int | None = None, lr: float | None = None) -> FitPreset:
        """A user's steps / lr, which apply to every task (they win over a task's own)."""
        chosen = {name for name, value in (("steps", steps), ("lr", lr)) if value is not None}
        return replace(
            self,
            steps=self.steps if steps is None else steps,
            lr=self.lr if lr is None else lr,
            task_changes=tuple(c for c in self.task_changes if c[1] not in chosen),
        )

    def pretraining(self, seed: int) -> Pretraining:
        """This schedule's manager pretraining, for a fit seeded with `seed`."""
        return Pretraining(self.pretrain, self.pretrain_steps, self.pretrain_max_points, seed,
                           self.pretrain_lr)

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
    # A short schedule for seconds-to-minutes fits (docs/method.md#the-fast-preset; the measured
    # alternatives: bench/RESULTS.md, sections "fast", "quality", "audio", "sdf", and
    # docs/method.md#measured-alternatives-to-the-fast-preset):
    # - lr 1e-3 decayed to 22% over 300 steps (gamma 0.995): SIREN's best rate too; 2e-3 diverged.
    # - the manager frozen at its pretrained bands for the first 30%: each expert learns its band.
    # - band (grid) pretraining, 20 steps at 3e-4: learnable at any size, unlike a random map.
    # - no experts-only stage: its fresh Adam state at lr ~1e-3 knocked the fit back.
    # - audio and 3D: lr 3e-4, the manager trained from step 1 (1e-3 left them unformed, and
    #   SIREN audio diverged; the grid-encoded audio model does ~2.5x better at 1e-3, left so).
    # - the model sized from the signal (`sized_config`), sparse top-2 once K > 4 (`sparse_top_k`).
    # - images and audio: 16k points a step (GRID_BATCH_POINTS): 4x the steps beat 4x the batch.
    # - audio: 1200 steps, the same decay over them (AUDIO_STEPS): it gains past 300.
    "fast": FitPreset(
        steps=FAST_STEPS, lr=1e-3, lr_gamma=FAST_LR_GAMMA, experts_only_fraction=0.0,
        manager_frozen_fraction=0.3,
        pretrain="grid", pretrain_steps=20, pretrain_max_points=16_384, pretrain_lr=3e-4,
        batch_points=65_536, size_aware=True, sparse_top_k=2,
        task_changes=(
            *for_tasks(("audio", "sdf", "sdf-small"), lr=3e-4, manager_frozen_fraction=0.0,
                       time_budget_s=DEFAULT_BUDGET_S),
            *for_tasks(("image", "audio"), batch_points=GRID_BATCH_POINTS),
            *for_tasks(("audio",), steps=AUDIO_STEPS, lr_gamma=FAST_LR_GAMMA ** (FAST_STEPS / AUDIO_STEPS)),
        ),
    ),
}


PRESETS_HELP = (
    "Fit schedule. fast: 300 steps (a 128 x 128 image: about 80 s on a 2-core CPU), audio 1200; "
    "audio and 3D stop at 120 s if sooner; paper: the paper's protocol, 30k steps at lr 1e-5, "
    "meant for a GPU (a 128 x 128 image: about 3 minutes on an H200)."
)


def preset(name: str) -> FitPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

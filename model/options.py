"""What a user chooses for one fit, declared once: the CLI's options, the API's form fields and
the page's choices are built from `FitOptions` and the registries it names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from model.network import ModelConfig
from model.presets import FitPreset, preset
from model.signals import kinds
from model.signals.base import Signal
from model.signals.image import psnr

TARGET_METRICS: dict[str, Callable[[float], float]] = {
    "psnr": lambda psnr_db: psnr_db,  # images: PSNR on [0, 1] already
    "mse": lambda mse: psnr(mse, peak=1.0),  # audio: the waveform is normalised to peak 1
}
"""PSNR (dB) from a kind's progress metric, for the kinds a `target_psnr` applies to."""

MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; databases store signed 64-bit integers
MIN_TARGET_PSNR, MAX_TARGET_PSNR = 1.0, 200.0  # float32 fits top out near 100 dB; 200 is no target


@dataclass(frozen=True)
class FitOptions:
    """What a user chooses for one fit (the CLI's and the API's fit options)."""

    preset: str = "fast"
    steps: int | None = None
    lr: float | None = None
    model: str = "neural-experts"
    experts: int | None = None
    activation: str = "sine"
    seed: int = 0
    device: str = "auto"
    compile: bool | None = None
    """torch.compile the training step: True, False, or None to decide from the schedule's length
    (a compile costs seconds to a minute up front; see COMPILE_MIN_STEPS). Dense steps only."""
    top_k: int | None = None
    """Experts each training point runs (1..K); None or K is the paper's dense loss. At 1 the
    manager learns from the balance term only (q renormalised over one expert is 1)."""
    time_budget_s: float | None = None
    """Seconds the fit may take (pretraining and training); its schedule is laid over them."""
    target_psnr: float | None = None
    """dB (images, audio): stop once the progress metric reaches it."""

    def __post_init__(self) -> None:
        # One set of rules for every caller: the CLI and the API refuse what a fit would trip
        # over later (an lr of inf diverges at step 1, a 70-bit seed overflows the generator).
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be 1 or more, got {self.steps}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number above 0, got {self.lr}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be 0 to {MAX_SEED} (2^63 - 1), got {self.seed}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be 1 or more, got {self.top_k}")
        if self.time_budget_s is not None and not (
            math.isfinite(self.time_budget_s) and self.time_budget_s > 0
        ):
            raise ValueError(f"time_budget_s must be a finite number above 0, got {self.time_budget_s}")
        if self.target_psnr is not None and not MIN_TARGET_PSNR <= self.target_psnr <= MAX_TARGET_PSNR:
            raise ValueError(f"target_psnr must be {MIN_TARGET_PSNR:g} to {MAX_TARGET_PSNR:g} dB, "
                             f"got {self.target_psnr}")

    def check_for(self, signal: Signal, config: ModelConfig) -> None:
        """What the options alone cannot tell: top_k against this model's K, a target against
        this signal's metric. ValueError when they do not fit."""
        if self.top_k is not None and self.top_k > config.n_experts:
            raise ValueError(f"top_k must be 1 to K = {config.n_experts}, got {self.top_k}")
        if self.target_psnr is not None and kinds()[signal.kind].metric_name not in TARGET_METRICS:
            raise ValueError(f"target_psnr applies to image and audio fits, not {signal.kind}")

    def sparse_k(self, config: ModelConfig) -> int | None:
        """k when training runs each point's top k experts only; None for the dense loss."""
        return self.top_k if self.top_k is not None and self.top_k < config.n_experts else None

    def schedule(self) -> FitPreset:
        return preset(self.preset).with_overrides(self.steps, self.lr)

"""The fit loop: pretrained manager -> all parameters -> experts only (method.md, "Training").

`fit` takes a loaded Signal and plain options and returns the trained model with its metrics.
It reports progress through a callback and checks a cancellation flag between steps, so the
CLI draws a progress bar and the worker updates a job record from the same loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.network import NeuralExperts, count_parameters
from model.presets import FitPreset, model_config, preset
from model.pretrain import pretrained_model
from model.signals.base import Signal


class FitCanceled(Exception):
    """The cancellation check asked the fit to stop."""


class FitDiverged(Exception):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    metric: float
    eta_s: float
    stage: str  # "pretrain" | "fit" | "experts"


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
    compile: bool = False
    """torch.compile the training step (worth it for long fits; costs a compile up front)."""

    def schedule(self) -> FitPreset:
        return preset(self.preset).with_overrides(self.steps, self.lr)


@dataclass
class FitResult:
    model: NeuralExperts
    metrics: dict[str, float]
    config: dict[str, Any]
    """config.json: the model config, parameter count, signal meta and fit options."""
    history: list[Progress] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def balance_loss(logits: Tensor) -> Tensor:
    """Switch-Transformer load balance K * sum_i f_i P_i (Fedus et al. 2021, eq. 4): 1 when even."""
    k = logits.shape[-1]
    q = torch.softmax(logits, dim=-1)
    share = torch.bincount(logits.argmax(-1), minlength=k).to(q.dtype) / logits.shape[0]
    return k * (share * q.mean(0)).sum()


def build_model(signal: Signal, options: FitOptions) -> NeuralExperts:
    config = model_config(
        options.model, signal.task, signal.in_dim, signal.out_dim, options.activation, options.experts
    )
    torch.manual_seed(options.seed)
    return NeuralExperts(config)


def fit(
    signal: Signal,
    options: FitOptions,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir: Path | None = None,
) -> FitResult:
    """Fit a model to `signal`. Raises FitCanceled, FitDiverged, or ValueError on bad options."""
    schedule = options.schedule()
    if schedule.steps < 1:
        raise ValueError(f"steps must be >= 1, got {schedule.steps}")
    if not schedule.lr > 0:
        raise ValueError(f"lr must be > 0, got {schedule.lr}")
    device = resolve_device(options.device)
    torch.set_float32_matmul_precision("highest")  # method.md: ~90 dB PSNR needs full fp32, no TF32
    model = build_model(signal, options).to(device)

    report = on_progress or (lambda p: None)
    report(Progress(0, schedule.steps, math.nan, math.nan, math.nan, "pretrain"))
    pretrained_model(
        model, signal.grid, schedule.pretrain, schedule.pretrain_steps,
        schedule.pretrain_max_points, options.seed, cache_dir,
        signal.grid_values() if schedule.pretrain == "kmeans" else None,
    )

    history = _train(model, signal, schedule, options, report, should_stop or (lambda: False))
    model.eval()
    metrics = signal.evaluate(model)
    config = {
        "format": 1,
        "kind": signal.kind,
        "model_name": options.model,
        "model": model.config.to_dict(),
        "parameters": count_parameters(model),
        "signal": signal.meta(),
        "fit": {**asdict(options), "schedule": asdict(schedule)},
    }
    return FitResult(model, metrics, config, history)


def _train(
    model: NeuralExperts,
    signal: Signal,
    schedule: FitPreset,
    options: FitOptions,
    report: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> list[Progress]:
    experts, others = model.parameter_groups()
    first_stage = schedule.steps - round(schedule.experts_only_fraction * schedule.steps)
    if model.manager is None:
        first_stage = schedule.steps  # a SIREN has nothing to freeze: one stage
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(options.seed)
    forward = torch.compile(model) if options.compile else model

    def step_fn(batch: Any) -> tuple[Tensor, Callable[[], float]]:
        values, logits = forward(batch.coords)
        terms = signal.loss(values, logits, batch)
        loss = terms["loss"]
        if schedule.balance_weight > 0 and logits is not None:
            loss = loss + schedule.balance_weight * balance_loss(logits)
        return loss, lambda: signal.progress_metric(values.detach(), _detach(logits), batch)

    history: list[Progress] = []
    optimizer = torch.optim.Adam(experts + others, lr=schedule.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=schedule.lr_gamma)
    started = time.perf_counter()
    stage = "fit"
    for step in range(1, schedule.steps + 1):
        if step == first_stage + 1:
            # Stage 2: freeze encoders + manager, train the experts alone with a fresh Adam state,
            # continuing the decayed learning rate (method.md).
            for p in others:
                p.requires_grad_(False)
            lr = scheduler.get_last_lr()[0]
            optimizer = torch.optim.Adam(experts, lr=lr, betas=(0.9, 0.999))
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=schedule.lr_gamma)
            stage = "experts"
        if should_stop():
            raise FitCanceled(f"canceled at step {step - 1} of {schedule.steps}")
        batch = signal.batch(gen, schedule.batch_points)
        loss, metric = step_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % schedule.report_every == 0 or step == schedule.steps:
            # Read the loss back only here: a host sync per step would stall a GPU.
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FitDiverged(f"loss became {loss_value} at step {step}; try a lower lr")
            elapsed = time.perf_counter() - started
            eta = elapsed / step * (schedule.steps - step)
            progress = Progress(step, schedule.steps, loss_value, metric(), eta, stage)
            history.append(progress)
            report(progress)
    for p in others:
        p.requires_grad_(True)
    return history


def _detach(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()

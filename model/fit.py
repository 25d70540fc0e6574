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

from model.network import NeuralExperts, count_parameters, train_rows
from model.presets import FitPreset, model_config, preset
from model.pretrain import pretrained_model
from model.signals.base import Batch, Signal

COMPILE_MIN_STEPS = 2000
"""`FitOptions.compile=None` compiles fits of at least this many steps: a cold compile of the
step (and its stage-2 variant) cost more than the ~20% it saves per step on shorter fits here."""

LossFn = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor, Tensor | None]]


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
    compile: bool | None = None
    """torch.compile the training step: True, False, or None to decide from the schedule's length
    (a compile costs seconds to a minute up front; see COMPILE_MIN_STEPS)."""

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
    """"auto" is the GPU when there is one; anything else must name a device this machine has.

    GPUs are counted through NVML (torch.cuda.device_count), not is_available(): that one
    initialises CUDA, after which the worker parent's forked job children could not use it.
    """
    gpus = torch.cuda.device_count()
    if name == "auto":
        return torch.device("cuda" if gpus > 0 else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise ValueError(f"device {name!r} is not available: this machine has {gpus} CUDA device(s)")
    return device


def balance_loss(logits: Tensor) -> Tensor:
    """Switch-Transformer load balance K * sum_i f_i P_i (Fedus et al. 2021, eq. 4): 1 when even."""
    k = logits.shape[-1]
    q = torch.softmax(logits, dim=-1)
    # A one-hot mean, not bincount: its shape does not depend on the data, so it compiles.
    chosen = logits.argmax(-1, keepdim=True) == torch.arange(k, device=logits.device)
    share = chosen.to(q.dtype).mean(0)
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
    schedule: FitPreset | None = None,
) -> FitResult:
    """Fit a model to `signal`. Raises FitCanceled, FitDiverged, or ValueError on bad options.

    `schedule` replaces the options' preset (with their steps / lr overrides still applied), for
    benchmarks and experiments that need a schedule no preset names.
    """
    chosen = options.schedule() if schedule is None else schedule.with_overrides(options.steps, options.lr)
    schedule = chosen.for_task(signal.task)
    if schedule.steps < 1:
        raise ValueError(f"steps must be >= 1, got {schedule.steps}")
    if not schedule.lr > 0:
        raise ValueError(f"lr must be > 0, got {schedule.lr}")
    device = resolve_device(options.device)
    torch.set_float32_matmul_precision("highest")  # method.md: ~90 dB PSNR needs full fp32, no TF32
    model = build_model(signal, options).to(device)

    report = on_progress or (lambda p: None)
    stop = should_stop or (lambda: False)

    def check_cancel(step: int, loss: float) -> None:
        if stop():  # the paper's 3000 pretraining steps take minutes on a CPU
            raise FitCanceled(f"canceled at manager pretraining step {step} of {schedule.pretrain_steps}")

    report(Progress(0, schedule.steps, math.nan, math.nan, math.nan, "pretrain"))
    pretrained_model(
        model, signal.grid, schedule.pretrain, schedule.pretrain_steps,
        schedule.pretrain_max_points, options.seed, cache_dir,
        signal.grid_values() if schedule.pretrain == "kmeans" else None, schedule.pretrain_lr,
        check_cancel,
    )

    history = _train(model, signal, schedule, options, report, stop)
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
    compiled = _should_compile(options, schedule)
    rows = train_rows(device)

    # The manager (and its encoder) may start frozen; it joins at step `frozen + 1`, before stage 2.
    routing = model.routing_parameters()
    frozen = min(round(schedule.manager_frozen_fraction * schedule.steps), first_stage)
    _set_trainable(routing, frozen == 0)
    loss_fn = make_loss_fn(model, signal, schedule.balance_weight, compiled)
    history: list[Progress] = []
    optimizer = make_adam(experts + others, schedule.lr, device)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=schedule.lr_gamma)
    started = time.perf_counter()
    stage = "fit"
    for step in range(1, schedule.steps + 1):
        if step == frozen + 1:
            _set_trainable(routing, True)
            loss_fn = make_loss_fn(model, signal, schedule.balance_weight, compiled)
        if step == first_stage + 1:
            # Stage 2: freeze encoders + manager, train the experts alone with a fresh Adam state,
            # continuing the decayed learning rate (method.md).
            _set_trainable(others, False)
            loss_fn = make_loss_fn(model, signal, schedule.balance_weight, compiled)
            optimizer = make_adam(experts, float(scheduler.get_last_lr()[0]), device)
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=schedule.lr_gamma)
            stage = "experts"
        if should_stop():
            raise FitCanceled(f"canceled at step {step - 1} of {schedule.steps}")
        batch = signal.batch(gen, schedule.batch_points)
        optimizer.zero_grad(set_to_none=True)
        loss, outputs = accumulate_gradients(loss_fn, batch, rows)
        optimizer.step()
        scheduler.step()
        if step % schedule.report_every == 0 or step == schedule.steps:
            # Read the loss back only here: a host sync per step would stall a GPU.
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise FitDiverged(f"loss became {loss_value} at step {step}; try a lower lr")
            elapsed = time.perf_counter() - started
            eta = elapsed / step * (schedule.steps - step)
            metric = signal.progress_metric(*outputs, batch)
            progress = Progress(step, schedule.steps, loss_value, metric, eta, stage)
            history.append(progress)
            report(progress)
    _set_trainable(others, True)
    return history


def _set_trainable(params: list[torch.nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


def _should_compile(options: FitOptions, schedule: FitPreset) -> bool:
    return options.compile if options.compile is not None else schedule.steps >= COMPILE_MIN_STEPS


def make_adam(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    # The fused kernel updates every parameter in one pass (the per-tensor loop took ~4% of a step).
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=fused)


def make_loss_fn(model: NeuralExperts, signal: Signal, balance_weight: float, compiled: bool) -> LossFn:
    """(coords, target, n_surface) -> (loss, values, logits): a step's forward, which `compiled`
    hands to torch.compile together with its backward. Make a new one whenever parameters are
    frozen or unfrozen: a compiled step is traced for the trainable set it first saw."""

    def loss_fn(coords: Tensor, target: Tensor, n_surface: int) -> tuple[Tensor, Tensor, Tensor | None]:
        values, logits = model(coords)
        loss = signal.loss(values, logits, Batch(coords, target, n_surface))["loss"]
        if balance_weight > 0 and logits is not None:
            loss = loss + balance_weight * balance_loss(logits)
        return loss, values, logits

    if not compiled:
        return loss_fn
    # Compiled code is cached per code object and reused while its guards pass, and torch 2.11's
    # guards on CUDA missed a parameter's requires_grad change: the manager, unfrozen at 30% of a
    # fast fit, never got a gradient again (8 dB lost; bench/RESULTS.md, "gpu"). So every step
    # function starts from an empty cache; a retrace costs ~1 s with inductor's on-disk cache warm.
    torch.compiler.reset()
    return torch.compile(loss_fn)


def accumulate_gradients(
    loss_fn: LossFn, batch: Batch, rows: int
) -> tuple[Tensor, tuple[Tensor, Tensor | None]]:
    """Backward through `batch` in micro-batches of at most `rows` rows; gradients add up in .grad.

    Each micro-batch's loss is weighted by its share of the rows, so the summed gradient is the
    full batch's (exactly, for losses that are means over points). Returns the batch loss and the
    detached (values (K, N, C), logits (N, K) | None) in the batch's row order.
    """
    n = batch.coords.shape[0]
    parts, order = split_batch(batch, rows)
    total = batch.coords.new_zeros(())
    values: list[Tensor] = []
    logits: list[Tensor] = []
    for part in parts:
        loss, part_values, part_logits = loss_fn(part.coords, part.target, part.n_surface)
        weighted = loss * (part.coords.shape[0] / n)
        weighted.backward()
        total += weighted.detach()
        values.append(part_values.detach())
        if part_logits is not None:
            logits.append(part_logits.detach())
    all_values = torch.cat(values, dim=1) if len(values) > 1 else values[0]
    all_logits = (torch.cat(logits) if len(logits) > 1 else logits[0]) if logits else None
    if order is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        all_values = all_values[:, inverse]
        all_logits = None if all_logits is None else all_logits[inverse]
    return total, (all_values, all_logits)


def split_batch(batch: Batch, rows: int) -> tuple[list[Batch], Tensor | None]:
    """Micro-batches of at most `rows` rows, and which batch row each of their rows is, in order
    (None when they are consecutive slices). With surface rows (an SDF batch, see Batch), every
    micro-batch takes an equal share of them first, so each keeps the batch's layout."""
    pieces = max(1, math.ceil(batch.coords.shape[0] / rows))
    if pieces == 1:
        return [batch], None
    if batch.n_surface == 0:
        coords, target = batch.coords.tensor_split(pieces), batch.target.tensor_split(pieces)
        return [Batch(c, t) for c, t in zip(coords, target, strict=True)], None
    device = batch.coords.device
    surface = torch.arange(batch.n_surface, device=device).tensor_split(pieces)
    rest = torch.arange(batch.n_surface, batch.coords.shape[0], device=device).tensor_split(pieces)
    index = [torch.cat([s, r]) for s, r in zip(surface, rest, strict=True)]
    parts = [
        Batch(batch.coords[i], batch.target[i], s.shape[0])
        for i, s in zip(index, surface, strict=True)
    ]
    return parts, torch.cat(index)


"""The fit loop: pretrained manager -> all parameters -> experts only (docs/method.md#schedule).

`fit` takes a loaded Signal and plain options and returns the trained model with its metrics.
It reports progress through a callback and checks a cancellation flag between steps, so the
CLI draws a progress bar and the worker updates a job record from the same loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from model.network import ModelConfig, NeuralExperts, count_parameters, train_rows
from model.options import TARGET_METRICS, FitOptions
from model.presets import DENSE_MAX_EXPERTS, FitPreset, model_config, sized_config
from model.pretrain import pretrained_model
from model.signals import kinds
from model.signals.base import Batch, Signal
from model.snapshot import FitPosition, FitSnapshot, capture, restore_optimizer

COMPILE_MIN_STEPS = 2000
"""`FitOptions.compile=None` compiles fits of at least this many steps: a cold compile of the
step (and its stage-2 variant) cost more than the ~20% it saves per step on shorter fits here."""
COMPILE_MIN_BUDGET_S = 300.0
"""Nor is a fit under a shorter time budget compiled: the cold compile's 15-30 s on a CPU would
eat what the faster steps win back in the time left."""

SPARSE_BALANCE_WEIGHT = 0.01
"""Weight of the load-balancing term (`balance_loss`) in sparse training when the schedule sets
none: an expert outside every point's top k gets no reconstruction gradient, so without it the
manager can starve experts for good. The Switch Transformer's own weight (Fedus et al. 2021,
sec. 2.2), not tuned here: the `sparse` bench's fits report the experts in use."""

PRETRAIN_BUDGET_SHARE = 0.25
"""Under a time budget, manager pretraining ends early once the fit has spent this share of it
(not cached then): the paper's 3000 pretraining steps take minutes on a CPU, which would leave a
short budget no steps to fit with. The fast preset's 20 steps take a second or two."""

StopReason = Literal["steps", "budget", "target"]

LossFn = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor, Tensor | None]]
SnapshotHook = Callable[[FitSnapshot], None]


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
    stage: str  # "pretrain" | "fit" | "experts" | "evaluate"


@dataclass
class FitResult:
    model: NeuralExperts
    metrics: dict[str, float]
    config: dict[str, Any]
    """config.json: the model config, parameter count, signal meta and fit options."""
    history: list[Progress] = field(default_factory=list)
    stop_reason: StopReason = "steps"

    @property
    def record(self) -> dict[str, float | str]:
        """metrics.json: the metrics, and why the fit stopped."""
        return {**self.metrics, "stop_reason": self.stop_reason}


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


def build_model(signal: Signal, options: FitOptions, schedule: FitPreset | None = None) -> NeuralExperts:
    """The model `options` name for `signal`; `schedule` (default: the options' preset) says
    whether Neural Experts is sized from the signal."""
    if options.model == "neural-experts" and (schedule or options.schedule()).size_aware:
        config = sized_config(signal.task, signal.in_dim, signal.out_dim, signal_shape(signal),
                              options.activation, options.experts)
    else:
        config = model_config(options.model, signal.task, signal.in_dim, signal.out_dim,
                              options.activation, options.experts)
    torch.manual_seed(options.seed)
    return NeuralExperts(config)


def signal_shape(signal: Signal) -> tuple[int, ...]:
    """What the size rule reads: the sample grid (images, audio), or (input points,) for 3D,
    whose grid is the fixed pretraining lattice."""
    points = signal.meta().get("points") if signal.task == "sdf" else None
    return (int(points),) if points else signal.grid.shape


def train_top_k(options: FitOptions, schedule: FitPreset, config: ModelConfig) -> int | None:
    """The user's top k, else the schedule's for a model past DENSE_MAX_EXPERTS; None: dense."""
    if options.top_k is None and schedule.sparse_top_k and config.n_experts > DENSE_MAX_EXPERTS:
        return schedule.sparse_top_k
    return options.sparse_k(config)


def fit(
    signal: Signal,
    options: FitOptions,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache_dir: Path | None = None,
    schedule: FitPreset | None = None,
    on_snapshot: SnapshotHook | None = None,
    snapshot_every_s: float = 0.0,
    resume: FitSnapshot | None = None,
) -> FitResult:
    """Fit a model to `signal`. Raises FitCanceled, FitDiverged, or ValueError on bad options.

    `schedule` replaces the options' preset (with their steps / lr overrides still applied), for
    benchmarks and experiments that need a schedule no preset names.

    `on_snapshot` gets the fit's resumable state every `snapshot_every_s` seconds of training
    (0: never); `resume`, such a snapshot of a fit with the same signal and options, continues
    that fit where it stood (its schedule, stage and time budget left) instead of starting over.
    """
    clock_started = time.perf_counter()  # a time budget covers pretraining too
    chosen = options.schedule() if schedule is None else schedule.with_overrides(options.steps, options.lr)
    schedule = chosen.for_task(signal.task)
    if schedule.steps < 1:
        raise ValueError(f"steps must be >= 1, got {schedule.steps}")
    if not schedule.lr > 0:
        raise ValueError(f"lr must be > 0, got {schedule.lr}")
    device = resolve_device(options.device)
    torch.set_float32_matmul_precision("highest")  # docs/method.md#precision: fp32, no TF32
    model = build_model(signal, options, schedule).to(device)
    options.check_for(signal, model.config)

    report = on_progress or (lambda p: None)
    stop = should_stop or (lambda: False)

    def check_cancel(step: int, loss: float) -> None:
        if stop():  # the paper's 3000 pretraining steps take minutes on a CPU
            raise FitCanceled(f"canceled at manager pretraining step {step} of {schedule.pretrain_steps}")

    clock = Clock(schedule.steps, *_limits(options, schedule), clock_started)
    if resume is None:
        report(Progress(0, schedule.steps, math.nan, math.nan, math.nan, "pretrain"))
        pretrained_model(
            model, signal.grid, schedule.pretraining(options.seed), cache_dir,
            signal.grid_values() if schedule.pretrain == "kmeans" else None, check_cancel,
            until=clock.pretraining_over,
        )
    else:
        model.load_state_dict(resume.model_state)  # the snapshot's weights replace pretraining

    config = {
        "format": 1,
        "kind": signal.kind,
        "model_name": options.model,
        "model": model.config.to_dict(),
        "parameters": count_parameters(model),
        "signal": signal.meta(),
        "fit": {**asdict(options), "schedule": asdict(schedule)},
    }
    snapshots = Snapshots(on_snapshot, snapshot_every_s, clock, config)
    history, stop_reason = _train(model, signal, schedule, options, clock, report, stop,
                                  snapshots, resume)
    if history:  # the evaluation takes a while on a big signal: say so, not a frozen bar
        report(replace(history[-1], stage="evaluate"))
    model.eval()
    metrics = signal.evaluate(model)
    return FitResult(model, metrics, config, history, stop_reason)


def _limits(options: FitOptions, schedule: FitPreset) -> tuple[int | None, float | None]:
    """(step cap, budget): the user's, or with neither the preset's steps and default budget."""
    if options.steps is None and options.time_budget_s is None and schedule.time_budget_s:
        return schedule.steps, schedule.time_budget_s
    return options.steps, options.time_budget_s


@dataclass
class Clock:
    """Where a fit stands in its schedule, in the schedule's steps, and whether it is over.

    With a step cap, a step is a step; with a time budget, the schedule is stretched over the
    time left once training starts: at half of it the lr has decayed as at half the steps, and
    the manager's freeze and the experts-only stage fall at their fractions of it. With both,
    the further of the two clocks leads and the first to run out ends the fit.
    """

    steps: int
    """The schedule's length: its lr decay and stage fractions are laid over this many steps."""
    max_steps: int | None
    """Stop after this many steps (None: only the budget ends the fit)."""
    budget_s: float | None
    started: float
    """time.perf_counter() when the budget started (before pretraining)."""
    now: Callable[[], float] = time.perf_counter
    training_started: float = math.nan

    def __post_init__(self) -> None:
        if self.max_steps is None and self.budget_s is None:
            self.max_steps = self.steps  # neither given: the preset's steps

    def pretraining_over(self) -> bool:
        """Whether manager pretraining has spent its share of the budget (PRETRAIN_BUDGET_SHARE)."""
        spent = self.now() - self.started
        return self.budget_s is not None and spent >= PRETRAIN_BUDGET_SHARE * self.budget_s

    def start_training(self) -> None:
        self.training_started = self.now()

    def resume(self, position: FitPosition) -> None:
        """Continue a snapshot's clocks: the time it had spent counts, the time since does not."""
        now = self.now()
        self.started, self.training_started = now - position.elapsed_s, now - position.training_s

    def elapsed_s(self) -> tuple[float, float]:
        """Seconds since the budget started, and since training started."""
        now = self.now()
        return now - self.started, now - self.training_started

    def position(self, done: int) -> float:
        """Schedule steps elapsed after `done` steps: the further along of steps and time."""
        by_steps = float(done) if self.max_steps is not None else 0.0
        return max(by_steps, self.steps * self._time_fraction())

    def stop_reason(self, done: int) -> StopReason | None:
        if self.max_steps is not None and done >= self.max_steps:
            return "steps"
        if self.budget_s is not None and self.now() - self.started >= self.budget_s:
            return "budget"
        return None

    def eta_s(self, done: int) -> float:
        """Seconds left: the budget's remainder, or the steps left at the pace so far."""
        left = math.inf
        if self.max_steps is not None:
            left = (self.now() - self.training_started) / done * (self.max_steps - done)
        if self.budget_s is not None:
            left = min(left, max(0.0, self.started + self.budget_s - self.now()))
        return left

    def total(self, done: int) -> int:
        """The step count the fit will end at: the cap, or under a budget a projection from the
        pace so far (0 before the first step)."""
        if self.budget_s is None or done == 0:
            return self.max_steps or 0
        pace = done / (self.now() - self.training_started)
        projected = done + math.floor(self.eta_s(done) * pace)
        return projected if self.max_steps is None else min(self.max_steps, projected)

    def _time_fraction(self) -> float:
        if self.budget_s is None:
            return 0.0
        span = self.started + self.budget_s - self.training_started
        return min(1.0, (self.now() - self.training_started) / span) if span > 0 else 1.0


@dataclass
class Snapshots:
    """When the fit hands its state to `hook`: every `every_s` seconds of training."""

    hook: SnapshotHook | None
    every_s: float
    clock: Clock
    config: dict[str, Any]
    """The checkpoint's config, carried by each snapshot so that it renders on its own."""
    last: float = math.nan

    def start(self) -> None:
        self.last = self.clock.now()

    def due(self) -> bool:
        return self.hook is not None and self.every_s > 0 and self.clock.now() - self.last >= self.every_s

    def take(self, done: int, stage: str, manager_frozen: bool, model: NeuralExperts,
             optimizer: torch.optim.Optimizer, gen: torch.Generator) -> None:
        assert self.hook is not None
        elapsed_s, training_s = self.clock.elapsed_s()
        position = FitPosition(done, stage, manager_frozen, elapsed_s, training_s, gen.device.type)
        self.hook(capture(position, self.config, model, optimizer, gen))
        self.last = self.clock.now()  # the hook's own time (an upload) does not eat the interval


def _train(
    model: NeuralExperts,
    signal: Signal,
    schedule: FitPreset,
    options: FitOptions,
    clock: Clock,
    report: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    snapshots: Snapshots,
    resume: FitSnapshot | None = None,
) -> tuple[list[Progress], StopReason]:
    experts, others = model.parameter_groups()
    first_stage = schedule.steps - round(schedule.experts_only_fraction * schedule.steps)
    has_stage_two = model.manager is not None and first_stage < schedule.steps  # SIREN: one stage
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(options.seed)
    top_k = train_top_k(options, schedule, model.config)
    compiled = top_k is None and _should_compile(options, clock)
    balance_weight = schedule.balance_weight or (SPARSE_BALANCE_WEIGHT if top_k else 0.0)
    rows = train_rows(device)
    to_psnr = TARGET_METRICS.get(kinds()[signal.kind].metric_name)

    # The manager (and its encoder) may start frozen; it joins once the schedule reaches
    # `frozen`, before stage 2.
    routing = model.routing_parameters()
    frozen = min(round(schedule.manager_frozen_fraction * schedule.steps), first_stage)
    manager_frozen = frozen > 0 if resume is None else resume.position.manager_frozen
    stage = "fit" if resume is None else resume.position.stage
    _set_trainable(others, stage == "fit")  # stage 2 trains the experts alone
    _set_trainable(routing, stage == "fit" and not manager_frozen)
    loss_fn = make_loss_fn(model, signal, balance_weight, compiled, top_k)
    history: list[Progress] = []
    optimizer = make_adam(experts + others if stage == "fit" else experts, schedule.lr, device)
    clock.start_training()
    done = 0
    if resume is not None:
        restore_optimizer(optimizer, resume.adam_state)
        if resume.position.device_type == device.type:
            gen.set_state(resume.batch_rng)
        else:  # a CPU generator's state does not fit a CUDA one: new batches, the same schedule
            gen.manual_seed(options.seed + resume.step)
        clock.resume(resume.position)
        done = resume.step
    snapshots.start()
    while True:
        position = clock.position(done)
        if manager_frozen and position >= frozen:
            manager_frozen = False
            _set_trainable(routing, True)
            loss_fn = make_loss_fn(model, signal, balance_weight, compiled, top_k)
        if has_stage_two and stage == "fit" and position >= first_stage:
            # Stage 2: freeze encoders + manager, train the experts alone with a fresh Adam state,
            # continuing the decayed learning rate (docs/method.md#schedule).
            _set_trainable(others, False)
            loss_fn = make_loss_fn(model, signal, balance_weight, compiled, top_k)
            optimizer = make_adam(experts, schedule.lr, device)
            stage = "experts"
        for group in optimizer.param_groups:  # ExponentialLR's decay, at the schedule's position
            group["lr"] = schedule.lr * schedule.lr_gamma**position
        if should_stop():
            raise FitCanceled(f"canceled at step {done} of {clock.total(done)}")
        batch = signal.batch(gen, schedule.batch_points)
        optimizer.zero_grad(set_to_none=True)
        loss, outputs = accumulate_gradients(loss_fn, batch, rows)
        optimizer.step()
        done += 1
        stop_reason = clock.stop_reason(done)
        if done % schedule.report_every == 0 or stop_reason is not None:
            # Read the loss back only here: a host sync per step would stall a GPU.
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise FitDiverged(f"loss became {loss_value} at step {done}; try a lower lr")
            metric = signal.progress_metric(*outputs, batch)
            if stop_reason is None and _reached(options.target_psnr, to_psnr, metric):
                stop_reason = "target"
            ended = stop_reason is not None
            progress = Progress(done, done if ended else clock.total(done), loss_value, metric,
                                0.0 if ended else clock.eta_s(done), stage)
            history.append(progress)
            report(progress)
        if stop_reason is not None:
            _set_trainable(others + routing, True)
            return history, stop_reason
        if snapshots.due():
            snapshots.take(done, stage, manager_frozen, model, optimizer, gen)


def _reached(target_psnr: float | None, to_psnr: Callable[[float], float] | None, metric: float) -> bool:
    return target_psnr is not None and to_psnr is not None and to_psnr(metric) >= target_psnr


def _set_trainable(params: list[torch.nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


def _should_compile(options: FitOptions, clock: Clock) -> bool:
    """The user's choice, else whether the fit runs long enough for a cold compile to pay back."""
    if options.compile is not None:
        return options.compile
    long_by_steps = clock.max_steps is None or clock.max_steps >= COMPILE_MIN_STEPS
    long_by_time = clock.budget_s is None or clock.budget_s >= COMPILE_MIN_BUDGET_S
    return long_by_steps and long_by_time


def make_adam(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    # The fused kernel updates every parameter in one pass (the per-tensor loop took ~4% of a step).
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=fused)


def make_loss_fn(
    model: NeuralExperts, signal: Signal, balance_weight: float, compiled: bool,
    top_k: int | None = None,
) -> LossFn:
    """(coords, target, n_surface) -> (loss, values, logits): a step's forward, which `compiled`
    hands to torch.compile together with its backward. Make a new one whenever parameters are
    frozen or unfrozen: a compiled step is traced for the trainable set it first saw.

    With `top_k`, each point runs only its k most trusted experts (NeuralExperts.forward_top_k):
    values and logits are then (k, N, C) and (N, k), slot 0 the argmax expert, and the signal's
    loss is its q-weighted loss over those k experts with q renormalised over them."""

    def loss_fn(coords: Tensor, target: Tensor, n_surface: int) -> tuple[Tensor, Tensor, Tensor | None]:
        logits: Tensor | None
        if top_k is None:
            values, logits = model(coords)
            every_logit = logits
        else:
            values, logits, every_logit = model.forward_top_k(coords, top_k)
        loss = signal.loss(values, logits, Batch(coords, target, n_surface))["loss"]
        if balance_weight > 0 and every_logit is not None:
            loss = loss + balance_weight * balance_loss(every_logit)
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


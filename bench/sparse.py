"""Sparse expert training: a step's time against K, dense (every expert on every point, the
paper's loss) vs sparse (each point through its top k experts), and what k buys at equal
wall-clock on a real image (the measurement behind `FitOptions.top_k`'s default)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from bench.report import Section, cpu_name, table
from bench.speed import our_step
from bench.timing import interleaved
from model.fit import FitOptions, fit
from model.network import CPU_BATCH_ROWS, ModelConfig, NeuralExperts
from model.presets import model_config
from model.signals import load_signal
from model.signals.base import Batch
from model.signals.image import ImageSignal

K_SWEEP = (4, 16, 64)
"""64 is past MAX_EXPERTS (a service cap sized for dense training): the bench builds it directly."""
SPARSE_K = 1
DRY_RUN_POINTS = 1024  # --steps: a few steps on a small batch prove the section runs
QUALITY_IMAGE = "kodim19"
QUALITY_BUDGET_S = 40.0
QUALITY_SWEEP: tuple[tuple[int, int | None], ...] = ((4, None), (4, 2), (4, 1), (16, 2))
"""(K, top_k) fitted for the same wall-clock: the paper's dense K = 4, then sparse k."""


def run(args: argparse.Namespace, kodak: Path, cache: Path) -> Section:
    section = Section("sparse")
    signal = load_signal(kodak / f"{QUALITY_IMAGE}.png", protocol="paper")
    assert isinstance(signal, ImageSignal)
    steps = step_times(args, signal)
    section.add(f"### Training step against K, {steps['points']:,} points, "
                f"{torch.get_num_threads()} threads, CPU: {cpu_name()}\n")
    section.add(table(["K", "dense ms", f"sparse k={SPARSE_K} ms", "dense / sparse",
                       "sparse vs K=4 sparse"], steps["rows"]))
    budget = 1.0 if args.steps else QUALITY_BUDGET_S
    for k in {k for k, _ in QUALITY_SWEEP}:  # pretraining cached first: budgets go to training
        fit(signal, FitOptions(experts=k, steps=1, device="cpu"), cache_dir=cache)
    fits = [_budgeted_fit(signal, k, top_k, budget, cache) for k, top_k in QUALITY_SWEEP]
    section.add(f"### {QUALITY_IMAGE} at the paper's 128 x 128, fast preset, {budget:g} s each "
                f"(manager pretraining cached beforehand)\n")
    section.add(table(["K", "top_k", "steps", "PSNR [0, 1]", "SSIM", "experts in use"],
                      [[f["K"], f["top_k"] or "all (dense)", f["steps"], f"{f['psnr']:.2f}",
                        f"{f['ssim']:.3f}", f["in_use"]] for f in fits]))
    section.data = {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                    "step_times": steps, "fits": fits}
    return section


def step_times(args: argparse.Namespace, signal: ImageSignal, config: ModelConfig | None = None,
               points: int | None = None) -> dict[str, object]:
    """A step's median time at each K of K_SWEEP, dense and sparse, for `config` (default: the
    paper's image model) with its K replaced, on the signal's first `points` pixels (all)."""
    points = DRY_RUN_POINTS if args.steps else points
    batch = Batch(signal.grid.coords()[:points], signal.pixels[:points])
    repeats = args.steps or args.repeats
    base_config = config or model_config("neural-experts", "image", 2, 3)
    candidates: dict[tuple[int, str], Callable[[], object]] = {}
    for k in K_SWEEP:
        torch.manual_seed(0)
        model = NeuralExperts(replace(base_config, n_experts=k))
        candidates[(k, "dense")] = our_step(model, signal, batch, None, CPU_BATCH_ROWS)
        candidates[(k, "sparse")] = our_step(model, signal, batch, None, CPU_BATCH_ROWS, top_k=SPARSE_K)
    # Every K in one interleaved run: a busy spell on the shared machine hits all rows alike.
    timings = interleaved({f"{k}/{name}": step for (k, name), step in candidates.items()}, repeats)
    medians = {key: timings[f"{key[0]}/{key[1]}"].median for key in candidates}
    base = medians[(K_SWEEP[0], "sparse")]
    rows = [[k, f"{medians[(k, 'dense')] * 1e3:.0f}", f"{medians[(k, 'sparse')] * 1e3:.0f}",
             f"{medians[(k, 'dense')] / medians[(k, 'sparse')]:.2f}x",
             f"{medians[(k, 'sparse')] / base:.2f}x"] for k in K_SWEEP]
    return {"points": batch.coords.shape[0], "rows": rows,
            "median_s": {name: t.median for name, t in timings.items()}}


def _budgeted_fit(signal: ImageSignal, k: int, top_k: int | None, budget: float,
                  cache: Path) -> dict[str, object]:
    result = fit(signal, FitOptions(experts=k, top_k=top_k, time_budget_s=budget, device="cpu"),
                 cache_dir=cache)
    _, ids = result.model.predict(signal.grid.coords())
    in_use = int((torch.bincount(ids, minlength=k) > 0).sum())
    return {"K": k, "top_k": top_k, "steps": result.history[-1].step, "in_use": f"{in_use} / {k}",
            "psnr": result.metrics["psnr"], "ssim": result.metrics["ssim"]}

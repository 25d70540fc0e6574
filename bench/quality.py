"""Image quality on Kodak at the paper's 128 x 128 protocol: SIREN Base, SIREN Wider and Neural
Experts at one step budget, each at the paper's learning rate and at its own best rate from a
small sweep, plus the `fast` preset. PSNR in both conventions (model.signals.image.image_metrics).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench.report import Section, table
from model.fit import FitOptions, fit
from model.presets import PRESETS, FitPreset
from model.signals import load_signal

MODELS = ("siren", "siren-wider", "neural-experts")
LABELS = {"siren": "SIREN Base", "siren-wider": "SIREN Wider", "neural-experts": "Neural Experts"}
PAPER_PSNR = {"siren": 57.23, "siren-wider": 77.50, "neural-experts": 89.35}  # method.md, Kodak, sine
PAPER_LR = 1e-5


@dataclass(frozen=True)
class Plan:
    images: tuple[str, ...]
    steps: int
    sweep: tuple[float, ...]
    """Learning rates tried on the first image; each model keeps its best for every image."""
    schedule: FitPreset
    note: str


def cpu_plan() -> Plan:
    fast = PRESETS["fast"]
    # The paper's schedule shape (gamma, 20% experts-only) at the fast preset's budget, with the
    # fast preset's manager pretraining: the paper's 3000 pretraining steps alone take minutes here.
    schedule = replace(PRESETS["paper"], steps=fast.steps, pretrain_steps=fast.pretrain_steps,
                       pretrain_lr=fast.pretrain_lr, pretrain_max_points=fast.pretrain_max_points)
    return Plan(("kodim19", "kodim05"), fast.steps, (1e-4, 3e-4, 1e-3), schedule,
                f"CPU mode: 2 images, {fast.steps} steps (the fast preset's budget), paper schedule "
                f"otherwise, with the fast preset's {fast.pretrain_steps}-step manager pretraining.")


def full_plan() -> Plan:
    images = tuple(f"kodim{i:02d}" for i in range(1, 25))
    paper = PRESETS["paper"]
    return Plan(images, paper.steps, (3e-5, 1e-4, 3e-4), paper,
                "Full mode: the paper's protocol, 24 images, 30k steps, 3000-step pretraining.")


@dataclass(frozen=True)
class Run:
    model: str
    lr: float
    image: str
    psnr: float
    psnr_paper: float
    seconds: float
    shares: list[float]


def _fit(image: Path, model: str, lr: float | None, schedule: FitPreset, preset: str,
         cache_dir: Path) -> Run:
    signal = load_signal(image, protocol="paper")
    started = time.perf_counter()
    result = fit(signal, FitOptions(preset=preset, model=model, lr=lr), cache_dir=cache_dir,
                 schedule=schedule)
    seconds = time.perf_counter() - started
    _, ids = result.model.predict(signal.grid.coords())
    counts = torch.bincount(ids, minlength=result.model.n_experts).float()
    return Run(model, result.config["fit"]["schedule"]["lr"], image.stem, result.metrics["psnr"],
               result.metrics["psnr_paper"], seconds, [round(float(c), 3) for c in counts / ids.numel()])


def run(args: argparse.Namespace, kodak: Path, cache_dir: Path) -> Section:
    section = Section("quality")
    plan = full_plan() if args.full else cpu_plan()
    section.add(plan.note + "\n")
    runs: list[Run] = []

    def go(model: str, lr: float | None, image: str, schedule: FitPreset, preset: str = "paper") -> Run:
        run = _fit(kodak / f"{image}.png", model, lr, schedule, preset, cache_dir)
        print(f"  {run}", flush=True)
        runs.append(run)
        return run

    best: dict[str, float] = {}
    for model in MODELS:
        swept = [go(model, lr, plan.images[0], plan.schedule) for lr in plan.sweep]
        best[model] = max(swept, key=lambda r: r.psnr).lr
    rows: list[tuple[str, str, list[Run]]] = []
    for model in MODELS:
        for lr, label in ((PAPER_LR, "paper lr"), (best[model], "best of sweep")):
            done = {r.image: r for r in runs if r.model == model and r.lr == lr}
            rows.append((LABELS[model], f"{lr:g} ({label})",
                         [done.get(i) or go(model, lr, i, plan.schedule) for i in plan.images]))
    fast = PRESETS["fast"]
    rows.append((LABELS["neural-experts"], f"fast preset ({fast.steps} steps, lr {fast.lr:g})",
                 [go("neural-experts", None, i, fast, "fast") for i in plan.images]))
    section.add(_table(rows, plan, args.full))
    section.add(f"Sweep on {plan.images[0]} ({plan.steps} steps), PSNR on [0, 1]:\n")
    section.add(_sweep_table(runs, plan))
    section.data = {"plan": {"images": plan.images, "steps": plan.steps, "sweep": plan.sweep},
                    "runs": [r.__dict__ for r in runs]}
    return section


def _table(rows: list[tuple[str, str, list[Run]]], plan: Plan, full: bool) -> str:
    headers = ["model", "lr", "steps", "PSNR [0,1]", "PSNR paper [-1,1]", "seconds / fit",
               f"expert shares ({plan.images[0]})"]
    if full:
        headers.append("paper")
    body: list[list[Any]] = []
    for label, lr, rs in rows:
        shares = " / ".join(f"{s:.2f}" for s in rs[0].shares) if len(rs[0].shares) > 1 else "-"
        steps = rs[0].seconds and (PRESETS["fast"].steps if lr.startswith("fast") else plan.steps)
        row: list[Any] = [label, lr, steps, f"{statistics.mean(r.psnr for r in rs):.2f}",
                          f"{statistics.mean(r.psnr_paper for r in rs):.2f}",
                          f"{statistics.mean(r.seconds for r in rs):.0f}", shares]
        if full:
            row.append(PAPER_PSNR[_model_of(label)] if "paper lr" in lr else "")
        body.append(row)
    return table(headers, body) + f"\nMeans over {len(plan.images)} image(s): {', '.join(plan.images)}.\n"


def _sweep_table(runs: list[Run], plan: Plan) -> str:
    first = [r for r in runs if r.image == plan.images[0]]
    body = [[LABELS[m], *(f"{r.psnr:.2f}" for lr in plan.sweep for r in first
                          if r.model == m and r.lr == lr)] for m in MODELS]
    return table(["model", *(f"lr {lr:g}" for lr in plan.sweep)], body)


def _model_of(label: str) -> str:
    return next(m for m, name in LABELS.items() if name == label)

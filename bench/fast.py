"""Why the `fast` preset is what it is: each of its choices undone, one at a time, at its own
budget, against SIREN Base on the same schedule at its best rate (model/presets.py cites these)."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from bench.quality import Run, Runner
from bench.report import Section, table
from model.presets import PRESETS, FitPreset

IMAGES = ("kodim19", "kodim05", "kodim23", "kodim08")
# SIREN Base on the same schedule at its best measured rates (2e-3 diverged for both models).
SIREN_SCHEDULES = {"lr 1e-3": {}, "lr 5e-4": {"lr": 5e-4}, "lr 1e-3, gamma 0.9995": {"lr_gamma": 0.9995}}


def variants(fast: FitPreset) -> dict[str, FitPreset]:
    return {
        "fast preset (bands, manager frozen 30%, lr 1e-3, gamma 0.995, one stage)": fast,
        "manager trained from the first step": replace(fast, manager_frozen_fraction=0.0),
        "manager frozen throughout": replace(fast, manager_frozen_fraction=1.0),
        "random map instead of bands (the paper's, 60 steps)": replace(
            fast, pretrain="random", pretrain_steps=60),
        "random map + load balance 1.0, manager from step 1": replace(
            fast, pretrain="random", pretrain_steps=60, balance_weight=1.0, manager_frozen_fraction=0.0),
        "with the paper's 20% experts-only stage": replace(fast, experts_only_fraction=0.2),
        "gamma 0.9995 (10% decay instead of 78%)": replace(fast, lr_gamma=0.9995),
    }


def run(args: argparse.Namespace, kodak: Path, cache_dir: Path) -> Section:
    section = Section("fast")
    fast = PRESETS["fast"]
    fit_once = Runner(kodak, cache_dir, args.steps)
    rows: list[list[object]] = []
    for label, schedule in variants(fast).items():
        runs = [fit_once("neural-experts", None, image, schedule) for image in IMAGES]
        rows.append([f"Neural Experts, {label}", *_psnrs(runs), _used(runs), f"{runs[0].seconds:.0f}"])
    for label, changes in SIREN_SCHEDULES.items():
        schedule = replace(fast, **changes)
        runs = [fit_once("siren", None, image, schedule) for image in IMAGES]
        rows.append([f"SIREN Base, {label}", *_psnrs(runs), "-", f"{runs[0].seconds:.0f}"])
    section.add(f"{fast.steps} steps each, PSNR on [0, 1]; seconds include pretraining when the "
                f"cache was cold.\n")
    section.add(table(["variant", *IMAGES, "mean", "experts used (over 5%)", "seconds"], rows))
    section.data = {"fast": asdict(fast), "runs": [asdict(r) for r in fit_once.runs]}
    return section


def _psnrs(runs: list[Run]) -> list[str]:
    return [f"{r.psnr:.2f}" for r in runs] + [f"{statistics.mean(r.psnr for r in runs):.2f}"]


def _used(runs: list[Run]) -> str:
    """How many experts own over 5% of the pixels, image by image."""
    return " / ".join(str(sum(share > 0.05 for share in r.shares)) for r in runs)

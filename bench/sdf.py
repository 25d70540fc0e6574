"""3D: one mesh as an SDF point cloud, SIREN vs Neural Experts: IoU, trimap IoU (d = 0.001) and
Chamfer x1e5 from model.signals.sdf (docs/method.md#3d-shapes). The CPU mode fits the paper's
small models for a short schedule; --full fits the large ones with the paper's 3D schedule."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.quality import cut
from bench.report import Section, table
from model.fit import FitOptions, fit
from model.presets import PRESETS
from model.signals import load_signal

DRY_RUN_EVAL_RESOLUTION = 32  # the metrics' grid in a dry run (the paper's 128^3 takes ~30 s a fit here)
MESH = "spot"  # a closed, genus-0 scan-free mesh: clean ground truth for IoU
# docs/method.md#3d-results: mean trimap IoU (d = 0.001) over Armadillo, Dragon, Lucy, Thai
# (other shapes).
PAPER_TRIMAP = {("siren", "sdf"): 0.6662, ("neural-experts", "sdf"): 0.8180,
                ("siren", "sdf-small"): 0.5874, ("neural-experts", "sdf-small"): 0.7265}


@dataclass(frozen=True)
class SdfRun:
    model: str
    size: str
    metrics: dict[str, float]
    seconds: float


def run(args: argparse.Namespace, folder: Path, cache_dir: Path) -> Section:
    section = Section("sdf")
    paper = PRESETS["paper"]
    if args.full:
        size = "sdf"
        # docs/method.md#schedule: 3D trains in a single stage, lr 3e-5 in the released config.
        schedule = replace(paper, lr=3e-5, experts_only_fraction=0.0)
        section.add(f"Full mode: {MESH}, large models, {schedule.steps} steps, lr 3e-5, one stage.\n")
    else:
        size = "sdf-small"
        schedule = PRESETS["fast"].for_task(size)
        section.add(f"CPU mode: {MESH}, the paper's small models (Neural Experts 323k, SIREN 396k "
                    f"parameters), the fast preset ({schedule.steps} steps of 30k points), both at "
                    f"its 3D lr {schedule.lr:g}. The paper: 4 other shapes, large models, long fits.\n")
    signal = replace(load_signal(folder / f"{MESH}.obj"), task=size)  # type: ignore[type-var]
    if args.steps is not None:  # a dry run: its metrics mean nothing, so a coarse grid will do
        signal = replace(signal, eval_resolution=DRY_RUN_EVAL_RESOLUTION)
    runs = []
    for model in ("siren", "neural-experts"):
        started = time.perf_counter()
        result = fit(signal, FitOptions(model=model), cache_dir=cache_dir, schedule=cut(schedule, args.steps))
        runs.append(SdfRun(model, size, result.metrics, time.perf_counter() - started))
        print(f"  {runs[-1]}", flush=True)
    rows = [[r.model, r.size, f"{r.metrics['iou']:.4f}", f"{r.metrics['trimap_iou']:.4f}",
             f"{r.metrics['chamfer']:.3g}", f"{r.seconds:.0f}", PAPER_TRIMAP[(r.model, r.size)]]
            for r in runs]
    section.add(table(["model", "size", "IoU", "trimap IoU", "Chamfer x1e5", "seconds",
                       "paper trimap IoU (other shapes)"], rows))
    section.data = {"mesh": MESH, "runs": [r.__dict__ for r in runs]}
    return section

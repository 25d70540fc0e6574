"""Real-size signals at equal wall-clock budgets (issue 13): full-size Kodak images fitted by
today's fixed-size fast preset, by the size-aware default and by SIREN Base at its best rate for
the budget, each beside JPEG at the checkpoint's size; a step's time against K for the sized
model; a minute of speech and a mesh at their default budgets.

`--budgets` picks the image budgets (default: 60 s and 180 s on a CPU, 10 / 30 / 120 s on a GPU).
The first budget runs every variant on the four images, with SIREN's rate swept on the first;
later budgets run the size-aware default and SIREN (at that rate) on the first image only, so
the CPU default ends in under half an hour."""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from bench.quality import cut, expert_shares
from bench.report import Section, cpu_name, table
from bench.sdf import DRY_RUN_EVAL_RESOLUTION
from bench.sparse import K_SWEEP, SPARSE_K, step_times
from model.checkpoint import save_checkpoint
from model.fit import FitOptions, FitResult, build_model, fit, resolve_device, signal_shape
from model.presets import GRID_BATCH_POINTS, PRESETS, FitPreset
from model.signals import load_signal
from model.signals.image import ImageSignal, psnr
from model.signals.sdf import SdfSignal, level_set, predicted_volume

IMAGES = ("kodim19", "kodim05", "kodim23", "kodim08")
CPU_BUDGETS = (60.0, 180.0)
GPU_BUDGETS = (10.0, 30.0, 120.0)
SIREN_LRS = (1e-3, 3e-4)
"""SIREN Base's sweep, per budget on the first image: 1e-3 was its best at 300 steps (bench
"fast"); a longer fit may prefer the lower rate."""
FIXED_FAST = replace(PRESETS["fast"], size_aware=False, sparse_top_k=None, task_changes=())
"""The fast preset before issue 13: the paper's image model (K = 4, sine encoders), dense loss."""
SIREN_SCHEDULE = replace(FIXED_FAST, batch_points=GRID_BATCH_POINTS)
"""SIREN Base on the size-aware default's points per step: at a fixed budget both get the many
short steps that took the default from 19 to 78 steps in 60 s."""
STEP_POINTS = 16_384  # as bench "sparse": step times comparable across the two sections
SPEECH_CLIPS = ("gt_counting.wav", "gt_twospeakers.wav")
SPEECH_SECONDS = 60.0
MESH = "spot.obj"
DRY_RUN_BUDGET_S = 2.0
DRY_RUN_SHAPE = (192, 256)


def run(args: argparse.Namespace, data: Path, cache: Path) -> Section:
    section = Section("realsize")
    device = resolve_device("auto")
    budgets = tuple(args.budgets or (GPU_BUDGETS if device.type == "cuda" else CPU_BUDGETS))
    images = IMAGES[:1] if args.steps else IMAGES
    runner = Runner(data / "images" / "kodak", cache, str(device), args.steps)
    fits = runner.budget(budgets[0], images)
    siren_lr = _best_lr(fits, budgets[0])
    fits += [f for budget in budgets[1:] for f in runner.longer(budget, images[0], siren_lr)]
    where = f"GPU: {torch.cuda.get_device_name()}" if device.type == "cuda" else f"CPU: {cpu_name()}"
    section.add(f"### Full-size Kodak at equal wall-clock, {torch.get_num_threads()} threads, {where}\n")
    section.add(_fits_table(fits))
    section.add(_means_table(fits))
    signal = runner.signal(images[0])
    sized = build_model(signal, FitOptions()).config
    steps = step_times(args, signal, sized, STEP_POINTS)
    section.add(f"### Training step against K, the size-aware model of {images[0]} (grid encoding), "
                f"{steps['points']:,} points, CPU: {cpu_name()}\n")
    section.add(table(["K", "dense ms", f"sparse k={SPARSE_K} ms", "dense / sparse",
                       "sparse vs K=4 sparse"], steps["rows"]))
    speech = _speech_fit(data / "audio", cache, args.steps)
    shape = _mesh_fit(data / "meshes" / MESH, cache, args.steps)
    section.add("### A minute of speech and a mesh, the default preset and budget\n")
    section.add(_others_table(speech, shape))
    section.data = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "device": str(device),
                    "budgets": budgets, "k_sweep": K_SWEEP, "fits": fits, "step_times": steps,
                    "speech": speech, "mesh": shape}
    return section


class Runner:
    """Budgeted image fits, each signal loaded once (a dry run: a corner of it)."""

    def __init__(self, kodak: Path, cache: Path, device: str, dry_steps: int | None) -> None:
        self.kodak, self.cache, self.device, self.dry_steps = kodak, cache, device, dry_steps
        self.signals: dict[str, ImageSignal] = {}

    def signal(self, image: str) -> ImageSignal:
        if image not in self.signals:
            signal = load_signal(self.kodak / f"{image}.png", device=self.device)
            assert isinstance(signal, ImageSignal)
            self.signals[image] = _corner(signal, DRY_RUN_SHAPE) if self.dry_steps else signal
        return self.signals[image]

    def budget(self, budget: float, images: tuple[str, ...]) -> list[dict[str, Any]]:
        """Every variant on every image at `budget`; SIREN's rates swept on the first image."""
        sweep = [self.fit(images[0], budget, "SIREN Base", "siren", SIREN_SCHEDULE, lr)
                 for lr in (SIREN_LRS[:1] if self.dry_steps else SIREN_LRS)]
        best = max(sweep, key=lambda f: f["psnr"])
        fits = [f for f in sweep if f is not best]  # the losing rates stay in the record
        for image in images:
            fits.append(self.fit(image, budget, "fast, fixed size (before)", "neural-experts", FIXED_FAST))
            fits.append(self.fit(image, budget, "size-aware default", "neural-experts", PRESETS["fast"]))
            fits.append(best if image == images[0] else
                        self.fit(image, budget, "SIREN Base", "siren", SIREN_SCHEDULE, best["lr"]))
        return fits

    def longer(self, budget: float, image: str, siren_lr: float) -> list[dict[str, Any]]:
        """A budget past the first, on one image: the size-aware default against SIREN at the
        first budget's best rate (the fixed preset and the sweep stay at the first budget, to
        keep the default run near 25 minutes on a CPU)."""
        return [self.fit(image, budget, "size-aware default", "neural-experts", PRESETS["fast"]),
                self.fit(image, budget, "SIREN Base", "siren", SIREN_SCHEDULE, siren_lr)]

    def fit(self, image: str, budget: float, variant: str, model: str, schedule: FitPreset,
            lr: float | None = None) -> dict[str, Any]:
        signal = self.signal(image)
        budget_s = DRY_RUN_BUDGET_S if self.dry_steps else budget
        options = FitOptions(model=model, lr=lr, time_budget_s=budget_s, steps=self.dry_steps,
                             device=self.device)
        started = time.perf_counter()
        result = fit(signal, options, cache_dir=self.cache, schedule=cut(schedule, self.dry_steps))
        seconds = time.perf_counter() - started
        record = {"image": image, "budget_s": budget, "variant": variant, "lr": lr or schedule.lr,
                  "seconds": seconds, **_image_record(result, signal, self.kodak / f"{image}.png")}
        print(f"  {record}", flush=True)
        return record


def _corner(signal: ImageSignal, shape: tuple[int, int]) -> ImageSignal:
    """The image's top-left `shape`: a dry run's evaluations are quick, and the crop is still
    past 128 x 128, so the size rule gives it a grid encoder as it does a full-size image."""
    height, width = signal.grid.shape
    pixels = signal.pixels.view(height, width, -1)[: shape[0], : shape[1]].reshape(-1, signal.out_dim)
    return replace(signal, pixels=pixels, grid=replace(signal.grid, shape=shape))


def _image_record(result: FitResult, signal: ImageSignal, source: Path) -> dict[str, Any]:
    size = _checkpoint_bytes(result)
    return {"steps": result.history[-1].step if result.history else 0, "psnr": result.metrics["psnr"],
            "ssim": result.metrics["ssim"], "experts": result.model.n_experts,
            "encoding": result.model.config.encoding, "shares": expert_shares(result.model, signal),
            "parameters": result.config["parameters"], "bytes": size,
            "jpeg_psnr": jpeg_psnr_at(source, size), "stop_reason": result.stop_reason}


def _checkpoint_bytes(result: FitResult) -> int:
    """What `nexp fit` would write: weights, config.json and metrics.json."""
    with tempfile.TemporaryDirectory(prefix="bench-realsize-") as folder:
        save_checkpoint(Path(folder), result.model, result.config, result.record)
        return sum(p.stat().st_size for p in Path(folder).iterdir())


def jpeg_psnr_at(source: Path, size: int) -> float:
    """PSNR on [0, 1] of the best-quality JPEG of `source` no larger than `size` bytes (Pillow,
    binary search on quality 1..95; quality 1's PSNR if even that is larger)."""
    original = np.asarray(Image.open(source).convert("RGB"), dtype=np.float64) / 255.0
    low, high, best = 1, 95, _jpeg(original, 1)[1]
    while low <= high:
        quality = (low + high) // 2
        encoded, value = _jpeg(original, quality)
        if encoded <= size:
            best, low = value, quality + 1
        else:
            high = quality - 1
    return best


def _jpeg(original: np.ndarray, quality: int) -> tuple[int, float]:
    buffer = io.BytesIO()
    Image.fromarray(np.round(original * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255.0
    return buffer.tell(), psnr(float(np.mean((decoded - original) ** 2)), peak=1.0)


def _speech_fit(audio: Path, cache: Path, dry_steps: int | None) -> dict[str, Any]:
    """The SIREN clips of speech (counting, two speakers) repeated to a minute: no minute-long
    speech clip is in the data set, and the rule sizes by samples, not content."""
    seconds = 1.0 if dry_steps else SPEECH_SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as folder:
        path = Path(folder) / "speech.wav"
        rate = _concatenate([audio / clip for clip in SPEECH_CLIPS], seconds, path)
        signal = load_signal(path)
        result, elapsed = _default_fit(signal, cache, dry_steps)
    return {"clip": f"{' + '.join(SPEECH_CLIPS)} repeated to {seconds:g} s", "sample_rate": rate,
            "samples": signal_shape(signal)[0], "experts": result.model.n_experts,
            "steps": result.history[-1].step if result.history else 0, "seconds": elapsed,
            "budget_s": result.config["fit"]["schedule"]["time_budget_s"],
            "mse": result.metrics["mse"], "stop_reason": result.stop_reason}


def _concatenate(clips: list[Path], seconds: float, out: Path) -> int:
    """Mono clips, in turn, until `seconds` are filled; all must share one sample rate."""
    waves, rates = zip(*(sf.read(str(c), dtype="float32", always_2d=True) for c in clips), strict=True)
    if len(set(rates)) != 1:
        raise SystemExit(f"{', '.join(map(str, clips))}: sample rates differ ({rates})")
    mono = [w.mean(axis=1) for w in waves]
    need = int(seconds * rates[0])
    repeats = -(-need // sum(len(m) for m in mono))
    sf.write(str(out), np.concatenate(mono * repeats)[:need], rates[0], subtype="FLOAT")
    return int(rates[0])


def _mesh_fit(path: Path, cache: Path, dry_steps: int | None) -> dict[str, Any]:
    signal = load_signal(path)
    assert isinstance(signal, SdfSignal)
    if dry_steps:  # its metrics mean nothing, so a coarse grid will do
        signal = replace(signal, eval_resolution=DRY_RUN_EVAL_RESOLUTION)
    result, elapsed = _default_fit(signal, cache, dry_steps)
    started = time.perf_counter()
    surface = level_set(predicted_volume(result.model, signal.eval_resolution))
    return {"mesh": path.name, "points": signal_shape(signal)[0], "experts": result.model.n_experts,
            "steps": result.history[-1].step if result.history else 0, "seconds": elapsed,
            "budget_s": result.config["fit"]["schedule"]["time_budget_s"],
            "mesh_seconds": time.perf_counter() - started, "grid": signal.eval_resolution,
            "closed": bool(surface is not None and surface.is_watertight),
            **{k: result.metrics[k] for k in ("iou", "trimap_iou", "chamfer")},
            "stop_reason": result.stop_reason}


def _default_fit(signal: Any, cache: Path, dry_steps: int | None) -> tuple[FitResult, float]:
    """A fit on default settings (the fast preset, its default budget); a dry run cut short."""
    started = time.perf_counter()
    if dry_steps:
        result = fit(signal, FitOptions(steps=dry_steps), cache_dir=cache,
                     schedule=cut(PRESETS["fast"], dry_steps))
    else:
        result = fit(signal, FitOptions(), cache_dir=cache)
    return result, time.perf_counter() - started


def _fits_table(fits: list[dict[str, Any]]) -> str:
    rows = [[f["image"], f"{f['budget_s']:g}", f["variant"], f"{f['lr']:g}", f["steps"],
             f"{f['psnr']:.2f}", f"{f['ssim']:.3f}", f"{f['experts']} ({f['encoding']})",
             _shares(f["shares"]), f"{f['bytes'] / 1e3:,.0f}", f"{f['jpeg_psnr']:.2f}"] for f in fits]
    return table(["image", "budget s", "variant", "lr", "steps", "PSNR [0,1]", "SSIM", "K",
                  "expert shares", "checkpoint kB", "JPEG PSNR at that size"], rows)


def _means_table(fits: list[dict[str, Any]]) -> str:
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for f in fits:
        if f["variant"] != "SIREN Base" or f["lr"] == _best_lr(fits, f["budget_s"]):
            groups.setdefault((f["budget_s"], f["variant"]), []).append(f)
    rows = [[f"{budget:g}", variant, len(g), f"{statistics.mean(f['psnr'] for f in g):.2f}",
             f"{statistics.mean(f['ssim'] for f in g):.3f}"] for (budget, variant), g in groups.items()]
    return "Means per budget and variant (SIREN at its best rate):\n\n" + table(
        ["budget s", "variant", "images", "PSNR [0,1]", "SSIM"], rows)


def _best_lr(fits: list[dict[str, Any]], budget: float) -> float:
    first = fits[0]["image"]
    sweep = [f for f in fits
             if f["variant"] == "SIREN Base" and f["budget_s"] == budget and f["image"] == first]
    return max(sweep, key=lambda f: f["psnr"])["lr"]


def _shares(shares: list[float]) -> str:
    return " / ".join(f"{s:.2f}" for s in shares) if len(shares) > 1 else "-"


def _others_table(speech: dict[str, Any], shape: dict[str, Any]) -> str:
    return table(
        ["signal", "size", "K", "budget s", "steps", "fit s", "result", "stop"],
        [[speech["clip"], f"{speech['samples']:,} samples", speech["experts"], speech["budget_s"],
          speech["steps"], f"{speech['seconds']:.0f}", f"MSE x1e-4 {speech['mse'] * 1e4:.2f}",
          speech["stop_reason"]],
         [shape["mesh"], f"{shape['points']:,} points", shape["experts"], shape["budget_s"],
          shape["steps"], f"{shape['seconds']:.0f}",
          f"IoU {shape['iou']:.3f}, trimap {shape['trimap_iou']:.3f}, closed mesh: {shape['closed']} "
          f"({shape['grid']}^3, {shape['mesh_seconds']:.0f} s)", shape["stop_reason"]]])


"""The paper's image protocol on a GPU in one short run: `python -m bench.gpu [--record]`.

1. Speed at the paper's image configuration (128 x 128, K = 4, 365,968 parameters), side by side
   and CUDA-synchronised: the reference's eager einsum re-creation (bench/reference.py), ours
   eager, ours compiled; then rendering, dense vs routed, at 128 x 128 and at 1024 x 1024.
2. Fits of Kodak images at the paper's preset (30k steps, lr 1e-5, 3000-step random-map
   pretraining) for SIREN Base, SIREN Wider and Neural Experts, and the fast preset (per seed,
   with the step compiled and eager), each in its own process and all at once on the one GPU (a
   366k-parameter step leaves most of it idle).
   A fit still running at the deadline stops there and reports the step it reached, so a lease
   of a few minutes always brings back a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.data import bench_data
from bench.quality import LABELS, PAPER_PSNR, cut, expert_shares
from bench.reference import ReferenceModel, reference_render
from bench.report import RESULTS_DIR, Section, save, table
from bench.speed import our_step, reference_step_fn
from bench.timing import interleaved
from model.fit import FitCanceled, FitOptions, Progress, build_model, fit
from model.network import NeuralExperts, train_rows
from model.presets import PRESETS, model_config
from model.pretrain import pretrained_model
from model.signals import Batch, Grid, load_signal
from model.signals.image import ImageSignal


@dataclass(frozen=True)
class FitJob:
    model: str
    preset: str
    image: str
    seed: int = 0
    step: str = "compiled"
    """compiled or eager"""

    @property
    def name(self) -> str:
        return f"{self.model}-{self.preset}-{self.image}-{self.seed}-{self.step}"


def jobs(images: list[str], models: list[str], presets: list[str], fast_image: str, seeds: list[int],
         steps: list[str]) -> list[FitJob]:
    """Every model at the paper's preset on every image (seed 0, compiled); the fast preset on
    `fast_image` for every seed and step kind (its lr 1e-3 fits are chaotic: one run says little)."""
    paper = [FitJob(m, "paper", i) for i in images for m in models]
    fast = [FitJob(m, "fast", fast_image, seed, step)
            for m in models if m != "siren-wider" for seed in seeds for step in steps]
    return [job for job in paper + fast if job.preset in presets]


def synced(fn: Callable[[], object], repeat: int, device: torch.device) -> Callable[[], object]:
    def run() -> None:
        for _ in range(repeat):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def speed(signal: ImageSignal, repeats: int, steps_per_sample: int, sides: list[int]
          ) -> tuple[str, dict[str, object]]:
    """Markdown tables and their numbers: a training step, then a render at each of `sides`."""
    torch.manual_seed(0)
    device = signal.pixels.device
    reference = ReferenceModel().to(device)
    ours = [NeuralExperts(model_config("neural-experts", "image", 2, 3)).to(device) for _ in range(3)]
    text, data = step_times(signal, reference, ours, repeats, steps_per_sample)
    for side in sides:
        render_text, data[f"render_{side}_ms"] = render_times(reference, ours[0].eval(), side, repeats)
        text += render_text
    return text, data


def step_times(signal: ImageSignal, reference: ReferenceModel, ours: list[NeuralExperts],
               repeats: int, steps_per_sample: int) -> tuple[str, dict[str, object]]:
    """The reference's step, ours eager (ours[0]), compiled (ours[1]) and, on a GPU, compiled
    into CUDA graphs (ours[2]), interleaved."""
    device = signal.pixels.device
    batch = Batch(signal.grid.coords(device), signal.pixels)
    steps = {
        "reference (eager einsum)": reference_step_fn(reference, batch),
        "ours eager": our_step(ours[0], signal, batch, None, train_rows(device)),
        "ours compiled": our_step(ours[1], signal, batch, "default", train_rows(device)),
    }
    started = time.perf_counter()
    synced(steps["ours compiled"], 1, device)()
    compile_s = time.perf_counter() - started
    if device.type == "cuda":
        graphed = our_step(ours[2], signal, batch, "reduce-overhead", train_rows(device))
        try:
            synced(graphed, 3, device)()  # CUDA graphs record on the first calls
            steps["ours compiled, CUDA graphs"] = graphed
        except Exception as e:  # an experiment: its failure is a finding, not the end of the run
            print(f"CUDA graphs step failed: {type(e).__name__}: {e}")
    train = interleaved({k: synced(fn, steps_per_sample, device) for k, fn in steps.items()}, repeats)
    ms = {name: t.median / steps_per_sample * 1e3 for name, t in train.items()}
    base = ms["reference (eager einsum)"]
    rows: list[list[object]] = [[name, f"{m:.2f}", f"{base / m:.2f}x"] for name, m in ms.items()]
    text = (f"### Training step, {batch.coords.shape[0]:,} points (full batch)\n\n"
            + table(["", "median ms / step", "vs reference"], rows)
            + f"\nFirst compiled step (compile included): {compile_s:.1f} s.\n\n")
    return text, {"train_ms": ms, "compile_s": compile_s}


def render_times(reference: ReferenceModel, model: NeuralExperts, side: int, repeats: int
                 ) -> tuple[str, dict[str, float]]:
    """A side x side render: the reference (dense, one batch), ours dense, ours routed."""
    device = next(model.parameters()).device
    coords = Grid((side, side), -1.0, 1.0).coords(device)
    n = coords.shape[0]
    candidates: dict[str, Callable[[], object]] = {
        "reference (one batch, dense)": lambda: reference_render(reference, coords, n),
        "ours dense": lambda: model.predict_dense(coords),
        "ours routed": lambda: model.predict(coords),
    }
    renders = interleaved({k: synced(fn, 1, device) for k, fn in candidates.items()}, repeats)
    ms = {name: t.median * 1e3 for name, t in renders.items()}
    base = ms["reference (one batch, dense)"]
    rows: list[list[object]] = [[name, f"{m:.2f}", f"{n / m / 1e3:,.1f}M", f"{base / m:.2f}x"]
                                for name, m in ms.items()]
    dense, dense_ids = model.predict_dense(coords)
    routed, routed_ids = model.predict(coords)
    text = (f"### Rendering {side} x {side} ({n:,} points)\n\n"
            + table(["", "median ms", "points/s", "vs reference"], rows)
            + f"\nRouted == dense: same ids {torch.equal(dense_ids, routed_ids)}, max |diff| "
            f"{float((dense - routed).abs().max()):.1e}.\n\n")
    return text, ms


def warm_pretraining(signal: ImageSignal, cache: Path, steps: int | None) -> float:
    """Pretrain the paper's random map once, so the Neural Experts fits all load it from the cache."""
    paper = cut(PRESETS["paper"], steps)
    model = build_model(signal, FitOptions()).to(signal.pixels.device)
    started = time.perf_counter()
    pretrained_model(model, signal.grid, paper.pretraining(seed=0), cache)
    return time.perf_counter() - started


def fit_one(job: FitJob, args: argparse.Namespace, out: Path, deadline: float, compile_step: bool) -> None:
    """One fit in its own process; writes out/<name>.json at every report and at the end."""
    torch.set_num_threads(1)  # the CPU only launches kernels; many fits share its cores
    signal = load_signal(args.kodak / f"{job.image}.png", protocol="paper", device=args.device)
    path = out / f"{job.name}.json"
    started = time.perf_counter()
    state: dict[str, object] = {"job": asdict(job), "done": False, "step": 0}

    def write(**fields: object) -> None:
        state.update(fields, seconds=time.perf_counter() - started)
        path.write_text(json.dumps(state))

    def report(p: Progress) -> None:
        if p.step > 0 and (p.step % 500 == 0 or p.step == p.total):
            write(step=p.step, total=p.total, batch_psnr=p.metric)

    options = FitOptions(model=job.model, device=args.device, seed=job.seed,
                         compile=compile_step and job.step == "compiled")
    try:
        result = fit(signal, options, report, lambda: time.time() > deadline, args.scratch / "cache",
                     cut(PRESETS[job.preset], args.steps))
    except FitCanceled:
        write(stopped="deadline")
        return
    except Exception as e:  # the table says which fit broke and why
        write(error=f"{type(e).__name__}: {e}")
        raise
    write(done=True, step=result.history[-1].step, **result.metrics,
          shares=expert_shares(result.model, signal))


def run_fits(todo: list[FitJob], args: argparse.Namespace, deadline: float, compile_step: bool
             ) -> list[dict[str, object]]:
    out = args.scratch / "fits"
    out.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")  # CUDA cannot be forked
    procs = [context.Process(target=fit_one, args=(job, args, out, deadline, compile_step)) for job in todo]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=max(1.0, deadline + 60 - time.time()))  # evaluation and saving after the deadline
        if p.is_alive():
            p.kill()
    results = []
    for job in todo:
        path = out / f"{job.name}.json"
        results.append(json.loads(path.read_text()) if path.exists() else {"job": asdict(job), "step": 0})
    return results


def fits_table(results: list[dict[str, object]]) -> str:
    rows = []
    for r in results:
        job = r["job"]
        assert isinstance(job, dict)
        where = f"{r['step']:,}" if r.get("done") else f"{r['step']:,} of {r.get('total', '?')}"
        psnr = (f"{r['psnr']:.2f}" if r.get("done") else
                f"({r['batch_psnr']:.2f} at step {r['step']:,})" if "batch_psnr" in r else "-")
        shares = r.get("shares", [])
        assert isinstance(shares, list)
        rows.append([
            LABELS[job["model"]], job["preset"], job["image"], job["seed"], job["step"], where, psnr,
            f"{r['psnr_paper']:.2f}" if r.get("done") else "-",
            f"{r['seconds']:.0f}" if "seconds" in r else "-",
            " / ".join(f"{s:.2f}" for s in shares) if len(shares) > 1 else "-",
            f"{PAPER_PSNR[job['model']]:.2f}" if job["preset"] == "paper" else "",
            r.get("error", r.get("stopped", "")),
        ])
    return table(["model", "preset", "image", "seed", "step", "steps", "PSNR [0,1]", "PSNR paper [-1,1]", "s",
                  "expert shares", "paper (24-image mean)", "note"], rows)


def paper_means(results: list[dict[str, Any]]) -> str:
    """Each model's mean over its finished paper-preset fits, beside the paper's 24-image mean."""
    lines = []
    for model, label in LABELS.items():
        done = [r for r in results
                if r.get("done") and r["job"]["model"] == model and r["job"]["preset"] == "paper"]
        if done:
            lines.append(f"- {label}: {statistics.mean(r['psnr_paper'] for r in done):.2f} dB "
                         f"on [-1, 1] over {len(done)} image(s); the paper: {PAPER_PSNR[model]:.2f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=["kodim19", "kodim05"])
    parser.add_argument("--kodak", type=Path,
                        help="folder of kodimNN.png (default: images/kodak of NEXP_BENCH_DATA_DIR)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole run")
    parser.add_argument("--steps", type=int, help="a dry run: every preset cut to this many steps")
    parser.add_argument("--device", default="cuda", help="cpu for a dry run")
    parser.add_argument("--render-sides", type=int, nargs="*", default=[128, 1024],
                        help="render sizes timed; none skips the speed tables")
    parser.add_argument("--models", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"], choices=["paper", "fast"])
    parser.add_argument("--fast-image", help="the image of the fast-preset fits (default: the first)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the fast-preset fits")
    parser.add_argument("--fast-steps", nargs="+", default=["compiled"], choices=["compiled", "eager"],
                        help="step kinds of the fast-preset fits")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps-per-sample", type=int, default=20,
                        help="training steps per timed sample (one synchronize each keeps the host's "
                             "wait out of a step)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-gpu"))
    parser.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for gpu.json and gpu.md")
    args = parser.parse_args()
    args.kodak = args.kodak or bench_data("images", "kodak")  # the fits' processes read args.kodak
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark is for a GPU (`python -m bench` runs on a CPU)")
    deadline = time.time() + args.budget - 30  # leaves time to evaluate, save and print
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "2")  # fits compile side by side
    torch.set_float32_matmul_precision("highest")  # as model.fit: no TF32
    section = Section("gpu")
    signal = load_signal(args.kodak / f"{args.images[0]}.png", protocol="paper", device=args.device)
    assert isinstance(signal, ImageSignal)
    compile_step, data = True, {}
    if args.render_sides:
        try:
            text, data = speed(signal, args.repeats, args.steps_per_sample, args.render_sides)
        except Exception as e:  # a broken compile still leaves the fits to run, eagerly
            text, compile_step = f"Speed failed: {type(e).__name__}: {e}\n", False
        section.add(text)
    pretrain_s = warm_pretraining(signal, args.scratch / "cache", args.steps)
    todo = jobs(args.images, args.models, args.presets, args.fast_image or args.images[0], args.seeds,
                args.fast_steps)
    results = run_fits(todo, args, deadline, compile_step)
    pretrain_steps = cut(PRESETS["paper"], args.steps).pretrain_steps
    section.add(f"### Fits, {len(todo)} at once on the GPU\n\nThe paper's {pretrain_steps}-step "
                f"random-map pretraining took {pretrain_s:.1f} s once, before the fits (cached and shared by "
                f"them). Seconds are wall time while the fits shared the GPU; a fit stopped at the "
                f"deadline shows its training-batch PSNR (the whole image) at its last report.\n")
    section.add(fits_table(results) + "\n" + paper_means(results))
    section.data = {**data, "pretrain_s": pretrain_s, "fits": results}
    print(f"saved {save(section, args.record, args.results)}")


if __name__ == "__main__":
    main()

"""`python -m bench [speed|quality|audio|sdf ...] [--full] [--record]`: tables on stdout, JSON in
bench/results/, and with --record the tables replace their section of bench/RESULTS.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bench import audio, fast, faults, quality, realsize, sdf, soak, sparse, speed
from bench.data import bench_data
from bench.report import RESULTS_DIR, Section, save
from model.signals import load_signal
from model.signals.image import ImageSignal

SPEED_IMAGE = "kodim19"  # the paper's ablation image


def _speed(args: argparse.Namespace) -> Section:
    signal = load_signal(bench_data("images", "kodak", f"{SPEED_IMAGE}.png"), protocol="paper")
    assert isinstance(signal, ImageSignal)
    return speed.run(args, signal)


def _fresh_cache(run: Callable[[argparse.Namespace, Path, Path], Section], *folder: str
                 ) -> Callable[[argparse.Namespace], Section]:
    """Each section starts with an empty manager-pretraining cache, so the first Neural Experts
    fit's time includes its pretraining, as a first fit of a new shape would. `folder`, the
    section's part of the data set, is looked up when the section runs, not at import (--help and
    the other sections need none of it)."""

    def section(args: argparse.Namespace) -> Section:
        with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as cache:
            return run(args, bench_data(*folder), Path(cache))

    return section


SECTIONS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "speed": _speed,
    "quality": _fresh_cache(quality.run, "images", "kodak"),
    "fast": _fresh_cache(fast.run, "images", "kodak"),
    "audio": _fresh_cache(audio.run, "audio"),
    "sdf": _fresh_cache(sdf.run, "meshes"),
    "sparse": _fresh_cache(sparse.run, "images", "kodak"),
    "realsize": _fresh_cache(realsize.run),
    "soak": soak.run_soak,
    "load": soak.run_load,
    "faults": faults.run,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="section",
                        help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--full", action="store_true", help="the paper's full protocol (for a GPU)")
    parser.add_argument("--steps", type=int, help="a dry run: every fit cut to this many steps "
                        "(and pretraining steps); the numbers mean nothing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for CPU timings")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help="folder for each section's JSON and tables")
    parser.add_argument("--budgets", type=float, nargs="+", help="realsize: image fit budgets in s")
    parser.add_argument("--duration", type=float, default=180, help="soak: seconds of load")
    parser.add_argument("--quick", action="store_true", help=f"soak: {soak.QUICK_S} s only")
    parser.add_argument("--clients", type=int, default=4,
                        help="soak: client threads (load: 4x as many uploads, then renders, at once)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    for name in args.sections or list(SECTIONS):
        print(f"\n## {name}\n", flush=True)
        section = SECTIONS[name](args)
        print(f"saved {save(section, args.record, args.results)}")
        if section.data.get("lost"):  # soak, load: a job that never ended is a failure
            sys.exit(f"{name}: {section.data['lost']} jobs lost")


if __name__ == "__main__":
    main()

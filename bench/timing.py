"""Side-by-side timing on a shared machine: candidates run interleaved, so a slow spell (another
process taking a core) hits every candidate alike, and ratios of medians stay meaningful."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                ) -> dict[str, Timing]:
    """Time each candidate `repeats` times, taking turns (the order rotates every round)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            candidates[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(name, seconds[name]) for name in names}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

"""What a job keeps of its fit's course, so that a page opened later draws it: the loss and
metric curve, thinned to at most MAX_POINTS, and when each stage started and ended.

Both are plain JSON on the job row (`history`, `stages`), written with the progress each
heartbeat; a resumed attempt carries on from the row (service.jobs, worker.runner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from model.fit import Progress
from service.jobs import utcnow

MAX_POINTS = 200  # plenty for a chart a few hundred pixels wide; ~6 kB of JSON
STAGES = {"pretrain": "pretrain", "fit": "fit", "experts": "fit", "evaluate": "evaluate"}
"""The fit's stage (model.fit.Progress.stage) -> the stage a person sees: training the experts
alone is still fitting."""


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN


@dataclass
class Curve:
    """Points at steps that are multiples of `every`, plus the latest one: when there are more
    than MAX_POINTS, `every` doubles and the points off the coarser grid go, so the curve stays
    evenly spaced from its first step to its last however long the fit runs."""

    every: int = 1
    step: list[int] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    metric: list[float | None] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Curve:
        return cls() if data is None else cls(data["every"], data["step"], data["loss"], data["metric"])

    def to_json(self) -> dict[str, Any]:
        return {"every": self.every, "step": list(self.step), "loss": list(self.loss),
                "metric": list(self.metric)}

    def add(self, step: int, loss: float, metric: float) -> None:
        if self.step and step <= self.step[-1]:
            return  # a report of a step already drawn (the evaluation repeats the last one)
        if self.step and self.step[-1] % self.every:
            self._keep(range(len(self.step) - 1))  # the latest point, off the grid, gives way
        self.step.append(step)
        self.loss.append(_number(loss))
        self.metric.append(_number(metric))
        while len(self.step) > MAX_POINTS:
            self.every *= 2
            last = len(self.step) - 1
            self._keep([i for i, s in enumerate(self.step) if s % self.every == 0 or i == last])

    def cut(self, step: int) -> None:
        """Forget the points after `step`: a fit resumed from there redoes them."""
        self._keep([i for i, s in enumerate(self.step) if s <= step])

    def _keep(self, indexes: range | list[int]) -> None:
        self.step = [self.step[i] for i in indexes]
        self.loss = [self.loss[i] for i in indexes]
        self.metric = [self.metric[i] for i in indexes]


@dataclass
class Stages:
    """[{name, started_at, ended_at}] in the order the fit went through them (ISO 8601 UTC)."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def enter(self, name: str, now: datetime) -> None:
        if self.items and self.items[-1]["name"] == name:
            return
        self.close(now)
        self.items.append({"name": name, "started_at": now.isoformat(), "ended_at": None})

    def close(self, now: datetime) -> None:
        if self.items and self.items[-1]["ended_at"] is None:
            self.items[-1]["ended_at"] = now.isoformat()


@dataclass
class Timeline:
    """A job's curve and stages, fed every progress report of its fit."""

    curve: Curve = field(default_factory=Curve)
    stages: Stages = field(default_factory=Stages)

    @classmethod
    def resumed(cls, history: dict[str, Any] | None, stages: list[dict[str, Any]] | None,
                step: int) -> Timeline:
        """An earlier attempt's timeline, carried on from its snapshot at `step`: the points
        after it are redone, and the stage it was killed in goes on (an evaluation never
        ended, so it did not happen)."""
        curve = Curve.from_json(history)
        curve.cut(step)
        kept = [dict(item) for item in stages or [] if item["name"] != "evaluate"]
        if kept:
            kept[-1]["ended_at"] = None
        return cls(curve, Stages(kept))

    def add(self, progress: Progress) -> None:
        self.stages.enter(STAGES.get(progress.stage, progress.stage), utcnow())
        if progress.stage != "pretrain":  # pretraining has no loss or metric of the fit
            self.curve.add(progress.step, progress.loss, progress.metric)

    def finish(self) -> None:
        self.stages.close(utcnow())

    def columns(self) -> dict[str, Any]:
        """The job row's `history` and `stages`."""
        return {"history": self.curve.to_json(), "stages": [dict(item) for item in self.stages.items]}

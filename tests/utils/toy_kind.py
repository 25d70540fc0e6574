"""A signal kind declared here alone, registered on import: the proof that a kind is one file.

A ".toy" file is "TOY1" then whitespace-separated numbers, fitted as a 1-D signal on [-1, 1]
(the audio architecture). It has a load cap (max_toy_values), a render cap (max_toy_samples),
a reconstruction and an output of its own, `curve`, a media family, text/*, a CPU step cost,
a poor-result rule of its own metric, `close`, and a data protocol, "reversed" (read backwards).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.network import NeuralExperts
from model.render import Rendered
from model.signals.base import (
    Batch,
    Cap,
    Grid,
    Option,
    Output,
    PoorResult,
    SampledSignal,
    SignalError,
    SignalKind,
    register,
)

MAX_VALUES = 64
MAGIC = b"TOY1"


def _sniff(head: bytes) -> str | None:
    return ".toy" if head.startswith(MAGIC) else None


@dataclass
class ToySignal(SampledSignal):
    values: Tensor  # (N, 1)
    grid: Grid
    kind: str = "toy"
    task: str = "audio"
    in_dim: int = 1
    out_dim: int = 1

    def meta(self) -> dict[str, Any]:
        return {"samples": self.values.shape[0]}

    def grid_values(self) -> Tensor:
        return self.values

    def progress_metric(self, values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        return self.argmax_mse(values, logits, batch)

    def evaluate(self, model: NeuralExperts) -> dict[str, float]:
        predicted, _ = model.predict(self.grid.coords(self.values.device))
        errors = (predicted - self.values).abs()
        return {"mse": float((errors**2).mean()), "close": float((errors < 0.1).float().mean())}


def load(path: Path, protocol: str | None = None, device: str = "cpu",
         max_values: int = MAX_VALUES) -> ToySignal:
    numbers = path.read_bytes()[len(MAGIC):].split()
    if protocol == "reversed":
        numbers.reverse()
    if len(numbers) > max_values:
        raise SignalError(f"{path.name}: {len(numbers)} values is over the cap of {max_values}",
                          "too_large")
    if len(numbers) < 2:
        raise SignalError(f"{path.name}: a toy needs two values", "too_small")
    values = torch.tensor([float(n) for n in numbers], device=device)[:, None]
    return ToySignal(values, Grid((len(numbers),), -1.0, 1.0))


def values(model: NeuralExperts, meta: dict[str, Any], samples: int | None = None) -> Rendered:
    n = meta["samples"] if samples is None else samples
    if n < 1:
        raise ValueError(f"samples must be >= 1, got {n}")
    predicted, _ = model.predict(Grid((n,), -1.0, 1.0).coords(next(model.parameters()).device))
    return Rendered(json.dumps(predicted[:, 0].tolist()).encode(), "application/json", ".json")


def write_outputs(model: NeuralExperts, meta: dict[str, Any], folder: Path) -> list[Path]:
    path = folder / "values.json"
    path.write_bytes(values(model, meta).data)
    return [path]


SAMPLES = (Option("samples", int, "values (default: the input's)", minimum=1, cap="max_toy_samples"),)

KIND = register(
    SignalKind(
        name="toy",
        label="toy signal",
        description="TOY1 then numbers",
        coordinates="x in [-1, 1]",
        suffixes=(".toy",),
        sniff=_sniff,
        loader=load,
        write_outputs=write_outputs,
        cpu_step_s=1.5,
        metric_name="mse",
        protocols=("reversed",),
        outputs={
            "reconstruction": Output(values, "the values as JSON", ("application/json",), SAMPLES,
                                     suffixes=(".json",)),
            "curve": Output(values, "the values as JSON, again", ("application/json",), SAMPLES),
        },
        media_family="text",
        media_types={".toy": "text/plain"},
        caps=(
            Cap("max_toy_values", MAX_VALUES, "values in a toy file", load_option="max_values"),
            Cap("max_toy_samples", 1000, "values in a toy render"),
        ),
        poor_results=(PoorResult("close", 0.9, "The toy is off",
                                 "most values are more than 0.1 away. Try more steps."),),
    )
)

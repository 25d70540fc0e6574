"""Checkpoints: weights as safetensors + config.json. Loading never unpickles anything.

A checkpoint folder alone rebuilds the model and renders every output: config.json holds the
model config and the signal's meta (image size, sample rate, normalisation...).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.network import ModelConfig, NeuralExperts

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (no NaN or Infinity, which many parsers refuse): see `finite`."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def finite(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: such numbers become null (a trimap IoU with no grid point in
    its band is NaN, for one)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def save_checkpoint(
    folder: Path, model: NeuralExperts, config: dict[str, Any], metrics: dict[str, float | str]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "neural-experts/1"})
        os.replace(tmp, folder / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json(folder / CONFIG, config)
    write_json(folder / METRICS, finite(metrics))


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint: {CONFIG} is missing")
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def load_checkpoint(
    folder: Path, device: torch.device | str = "cpu"
) -> tuple[NeuralExperts, dict[str, Any]]:
    """(model in eval mode on `device`, config.json)."""
    config = read_config(folder)
    model = NeuralExperts(ModelConfig(**config["model"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(device)))
    return model.to(device).eval(), config

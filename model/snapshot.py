"""A fit's resumable state, taken mid-training: enough to continue the same schedule elsewhere.

One safetensors file holds it all: the model's weights, Adam's moment and step tensors and the
batch generator's state as tensors; in the file's header, as JSON, the schedule's position and
the checkpoint's config.json, so a snapshot alone renders a preview of the fit so far.
One file, so a store that puts one object all or nothing keeps a snapshot whole; nothing in it
is ever unpickled (torch.save of an optimiser's state would be pickle).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import torch
from safetensors.torch import load, save
from torch import Tensor

FORMAT = "neural-experts-snapshot/1"
MODEL, ADAM, RNG = "model.", "adam.", "rng.batches"


@dataclass(frozen=True)
class FitPosition:
    """Where the fit stood when the snapshot was taken (the JSON part)."""

    step: int
    """Training steps done."""
    stage: str
    """"fit" (all parameters) or "experts" (stage 2: experts alone)."""
    manager_frozen: bool
    elapsed_s: float
    """Seconds since the fit's time budget started (pretraining included)."""
    training_s: float
    """Seconds since training started."""
    device_type: str
    """Where the batch generator ran ("cpu", "cuda"): its state means nothing to another kind."""


@dataclass(frozen=True)
class FitSnapshot:
    position: FitPosition
    config: dict[str, Any]
    """The checkpoint's config.json (model.fit): what rebuilds and renders the model."""
    model_state: dict[str, Tensor]
    adam_state: dict[int, dict[str, Tensor]]
    """torch.optim.Adam's per-parameter state, by the parameter's index in the optimiser."""
    batch_rng: Tensor
    """The training batches' torch.Generator state."""

    @property
    def step(self) -> int:
        return self.position.step

    def to_bytes(self) -> bytes:
        tensors = {MODEL + name: t for name, t in self.model_state.items()}
        for index, state in self.adam_state.items():
            tensors.update({f"{ADAM}{index}.{name}": t for name, t in state.items()})
        tensors[RNG] = self.batch_rng
        cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        return save(cpu, metadata={"format": FORMAT, "position": json.dumps(asdict(self.position)),
                                   "config": json.dumps(self.config)})

    @classmethod
    def from_bytes(cls, data: bytes) -> FitSnapshot:
        """Raises ValueError when `data` is not a snapshot of this format."""
        metadata = header_metadata(io.BytesIO(data))
        tensors = load(data)
        adam: dict[int, dict[str, Tensor]] = {}
        for name, t in tensors.items():
            if name.startswith(ADAM):
                index, _, key = name.removeprefix(ADAM).partition(".")
                adam.setdefault(int(index), {})[key] = t
        model = {name.removeprefix(MODEL): t for name, t in tensors.items() if name.startswith(MODEL)}
        position = FitPosition(**json.loads(metadata["position"]))
        return cls(position, json.loads(metadata["config"]), model, adam, tensors[RNG])


def read_position(stream: BinaryIO) -> FitPosition:
    """Where a snapshot's fit stood, from the head of its file alone (no tensor is read)."""
    return FitPosition(**json.loads(header_metadata(stream)["position"]))


def header_metadata(stream: BinaryIO) -> dict[str, Any]:
    """A snapshot's `__metadata__`: a safetensors file starts with an 8-byte length, then a JSON
    header. Raises ValueError when the stream does not start a snapshot of this format."""
    head = stream.read(8)
    if len(head) < 8:
        raise ValueError("too short for a safetensors file")
    (length,) = struct.unpack("<Q", head)
    try:
        header = json.loads(stream.read(length))
    except ValueError as e:
        raise ValueError(f"not a safetensors header: {e}") from None
    metadata: dict[str, Any] = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not a fit snapshot of format {FORMAT}: {metadata.get('format')!r}")
    return metadata


def capture(
    position: FitPosition, config: dict[str, Any], model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, batch_rng: torch.Generator,
) -> FitSnapshot:
    """A copy of the fit's state, detached from the tensors training goes on changing."""
    adam = {index: {name: _copy(value) for name, value in state.items()}
            for index, state in optimizer.state_dict()["state"].items()}
    model_state = {name: _copy(t) for name, t in model.state_dict().items()}
    return FitSnapshot(position, config, model_state, adam, batch_rng.get_state())


def restore_optimizer(optimizer: torch.optim.Optimizer, adam_state: dict[int, dict[str, Tensor]]) -> None:
    state = optimizer.state_dict()
    state["state"] = adam_state  # load_state_dict moves each tensor to its parameter's device
    optimizer.load_state_dict(state)


def _copy(value: Any) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.tensor(value)
    return tensor.detach().to("cpu", copy=True)

"""Outputs rendered from a job's checkpoint, with routed inference, behind two in-memory caches.

Loaded models are kept by job (a render at a new size skips reloading), and rendered bytes by
(job, output, query), so a page asking for the same image twice pays once. Loading and rendering
run in worker threads, at most `render_threads` at once, so a slow render never stalls the
event loop and a burst of renders cannot take the threads that answer polls and uploads.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from anyio import CapacityLimiter, to_thread

from model.checkpoint import CONFIG, WEIGHTS, load_checkpoint
from model.network import NeuralExperts
from model.render import Rendered
from model.signals import kinds
from worker.settings import Settings
from worker.storage import Storage, checkpoint_key

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """An LRU bounded by the total `weigh(value)` of its entries; used from the event loop only."""

    def __init__(self, capacity: int, weigh: Callable[[V], int]) -> None:
        self.capacity, self.weigh = capacity, weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = 0

    def get(self, key: K) -> V | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> None:
        weight = self.weigh(value)
        if weight > self.capacity:
            return
        self._discard(key)
        self._items[key] = value
        self._size += weight
        while self._size > self.capacity:
            self._discard(next(iter(self._items)))

    def drop(self, keep: Callable[[K], bool]) -> None:
        """Remove every entry whose key `keep` rejects."""
        for key in [k for k in self._items if not keep(k)]:
            self._discard(key)

    def _discard(self, key: K) -> None:
        if key in self._items:
            self._size -= self.weigh(self._items.pop(key))


@dataclass(frozen=True)
class Loaded:
    model: NeuralExperts
    config: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.config["signal"]
        return meta


RenderKey = tuple[str, str, tuple[tuple[str, Any], ...]]
T = TypeVar("T")


class Renderer:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self._models: LRU[str, Loaded] = LRU(settings.model_cache_size, lambda _: 1)
        self._outputs: LRU[RenderKey, Rendered] = LRU(settings.render_cache_bytes,
                                                      lambda r: len(r.data))
        # Requests waiting for a render slot wait on the event loop, holding no thread.
        self._limiter = CapacityLimiter(settings.render_threads)

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await to_thread.run_sync(fn, limiter=self._limiter)

    async def load(self, job_id: str) -> Loaded:
        loaded = self._models.get(job_id)
        if loaded is None:
            loaded = await self._off_loop(lambda: self._read(job_id))
            self._models.put(job_id, loaded)
        return loaded

    def _read(self, job_id: str) -> Loaded:
        with tempfile.TemporaryDirectory() as tmp:
            for name in (CONFIG, WEIGHTS):
                (Path(tmp) / name).write_bytes(self.storage.get(checkpoint_key(job_id, name)))
            return Loaded(*load_checkpoint(Path(tmp), "cpu"))

    async def render(self, job_id: str, output: str, query: dict[str, Any]) -> Rendered:
        """kinds()[kind].outputs[output](model, meta, **query); raises ValueError on bad query."""
        key = (job_id, output, tuple(sorted(query.items())))
        cached = self._outputs.get(key)
        if cached is not None:
            return cached
        loaded = await self.load(job_id)
        renderer = kinds()[loaded.config["kind"]].outputs[output]
        rendered: Rendered = await self._off_loop(lambda: renderer(loaded.model, loaded.meta,
                                                                   **query))
        self._outputs.put(key, rendered)
        return rendered

    async def query(self, job_id: str, coords: list[list[float]]) -> tuple[list[Any], list[int]]:
        """Routed predictions at (N, in_dim) coordinates: values (N, C), expert ids (N,)."""
        model = (await self.load(job_id)).model

        def predict() -> tuple[list[Any], list[int]]:
            values, ids = model.predict(torch.tensor(coords, dtype=torch.float32))
            return values.tolist(), ids.tolist()

        return await self._off_loop(predict)

    def forget(self, job_id: str) -> None:
        self._models.drop(lambda key: key != job_id)
        self._outputs.drop(lambda key: key[0] != job_id)

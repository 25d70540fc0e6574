"""Outputs rendered from a job's checkpoint, with routed inference, behind two in-memory caches.

Loaded models are kept by job (a render at a new size skips reloading), and rendered bytes by
(job, output, query), so a page asking for the same image twice pays once. Loading and rendering
run in worker threads, at most `render_threads` at once, so a slow render never stalls the
event loop and a burst of renders cannot take the threads that answer polls and uploads.

A running job renders from its fit's latest snapshot (a preview): such a model is kept by
(job, snapshot step), so a newer snapshot is loaded afresh and an older one ages out.

A render only runs while someone waits for it. Identical requests in progress share one
computation; it stops between two chunks of points once every request for it has gone (the
client hung up: `unless_disconnected`), or once it runs past NEXP_RENDER_TIMEOUT_S. Each API key
may have NEXP_RENDERS_PER_KEY render requests in progress. So no render outlives its time
limit, and uvicorn's shutdown, which waits for every open request, waits that long at most.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import torch
from anyio import CapacityLimiter, to_thread
from starlette.requests import Request

from api.errors import ClientDisconnected, RenderTimeout, TooManyRenders
from model.checkpoint import CONFIG, WEIGHTS, load_checkpoint
from model.network import ModelConfig, NeuralExperts
from model.render import Rendered, stop_check, stoppable
from model.signals import kinds
from model.snapshot import FitSnapshot, read_position
from service.settings import Settings
from service.storage import ArtifactNotFound, Storage, checkpoint_key, snapshot_key

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# Renders under the pixel cap take seconds: one of the key's is likely done by then, and a
# retry that comes too early costs one cheap refusal.
RENDER_RETRY_AFTER_S = 2


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
class Source:
    """What a render reads: a job's checkpoint, or its running fit's snapshot at `step`."""

    job_id: str
    step: int | None = None


@dataclass(frozen=True)
class Loaded:
    model: NeuralExperts
    config: dict[str, Any]
    step: int | None = None
    """The snapshot's training step, for a preview; None for the final checkpoint."""

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.config["signal"]
        return meta


RenderKey = tuple[Source, str, tuple[tuple[str, Any], ...]]
T = TypeVar("T")


class RenderAbandoned(Exception):
    """Raised in a render's thread between two chunks: nobody waits for the render any more."""


@dataclass(frozen=True)
class Budget:
    """What ends a render between two chunks: every request for it gone, or its time up."""

    seconds: float
    deadline: float
    abandoned: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_now(cls, seconds: float) -> Budget:
        return cls(seconds, time.monotonic() + seconds)

    def check(self) -> None:
        """In the render's thread, before each chunk (model.render.stop_check)."""
        if self.abandoned.is_set():
            raise RenderAbandoned
        if time.monotonic() > self.deadline:
            raise RenderTimeout(f"the render ran past its {self.seconds:g} s limit "
                                "(NEXP_RENDER_TIMEOUT_S); ask for a smaller one")


@dataclass
class Flight:
    """One render computing, shared by the `waiters` requests that asked for it."""

    task: asyncio.Task[Rendered]
    budget: Budget
    waiters: int = 0


class Renderer:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self._models: LRU[Source, Loaded] = LRU(settings.model_cache_size, lambda _: 1)
        self._outputs: LRU[RenderKey, Rendered] = LRU(settings.render_cache_bytes,
                                                      lambda r: len(r.data))
        # Requests waiting for a render slot wait on the event loop, holding no thread.
        self._limiter = CapacityLimiter(settings.render_threads)
        self._flights: dict[RenderKey, Flight] = {}
        self._renders_by_owner: Counter[str | None] = Counter()
        self._render_timeout_s = settings.render_timeout_s
        self._renders_per_key = settings.renders_per_key

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await to_thread.run_sync(fn, limiter=self._limiter)

    async def load(self, job_id: str, step: int | None = None) -> Loaded:
        source = Source(job_id, step)
        loaded = self._models.get(source)
        if loaded is None:
            loaded = await self._off_loop(lambda: self._read(source))
            self._models.put(source, loaded)
        return loaded

    def snapshot_step(self, job_id: str) -> int | None:
        """The step of the job's latest snapshot, read from its header; None when it has none."""
        try:
            with self.storage.open(snapshot_key(job_id)) as stream:
                return read_position(stream).step
        except (ArtifactNotFound, ValueError):  # none yet, or one the API cannot read
            return None

    def _read(self, source: Source) -> Loaded:
        if source.step is not None:
            return self._read_snapshot(source.job_id)
        job_id = source.job_id
        with tempfile.TemporaryDirectory() as tmp:
            for name in (CONFIG, WEIGHTS):
                (Path(tmp) / name).write_bytes(self.storage.get(checkpoint_key(job_id, name)))
            model, config = load_checkpoint(Path(tmp), "cpu")
            return Loaded(stoppable(model), config)

    def _read_snapshot(self, job_id: str) -> Loaded:
        # The latest snapshot, which may be newer than the step asked for: its own step is told.
        snapshot = FitSnapshot.from_bytes(self.storage.get(snapshot_key(job_id)))
        model = NeuralExperts(ModelConfig(**snapshot.config["model"]))
        model.load_state_dict(snapshot.model_state)
        return Loaded(stoppable(model.eval()), snapshot.config, snapshot.step)

    @contextmanager
    def admit(self, owner: str | None) -> Iterator[None]:
        """One of `owner`'s render requests (None: auth is off) is in progress inside the block;
        TooManyRenders past its allowance."""
        if self._renders_by_owner[owner] >= self._renders_per_key:
            raise TooManyRenders(
                f"{self._renders_per_key} renders of this API key are in progress, the most one "
                "key may have (NEXP_RENDERS_PER_KEY); retry once one has finished",
                headers={"Retry-After": str(RENDER_RETRY_AFTER_S)})
        self._renders_by_owner[owner] += 1
        try:
            yield
        finally:
            self._renders_by_owner[owner] -= 1
            if not self._renders_by_owner[owner]:
                del self._renders_by_owner[owner]

    async def render(self, job_id: str, output: str, query: dict[str, Any],
                     step: int | None = None) -> Rendered:
        """kinds()[kind].outputs[output].render(model, meta, **query), from the checkpoint or (`step`)
        the snapshot; raises ValueError on a bad query, RenderTimeout past the time limit."""
        key = (Source(job_id, step), output, tuple(sorted(query.items())))
        cached = self._outputs.get(key)
        if cached is not None:
            return cached
        flight = self._flights.get(key) or self._take_off(key, output, query)
        return await self._wait(key, flight)

    def _take_off(self, key: RenderKey, output: str, query: dict[str, Any]) -> Flight:
        budget = Budget.from_now(self._render_timeout_s)
        task = asyncio.create_task(self._compute(key, budget, output, query))
        flight = self._flights[key] = Flight(task, budget)
        task.add_done_callback(lambda _: self._land(key, flight))
        return flight

    async def _wait(self, key: RenderKey, flight: Flight) -> Rendered:
        """The flight's result; a request that goes (cancelled) leaves it to the others, and the
        last one to go stops it."""
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.task.done():
                self._abandon(key, flight)

    def _abandon(self, key: RenderKey, flight: Flight) -> None:
        # Its thread stops at its next chunk and then gives its slot back; the task is never
        # cancelled, which would give the slot back while the thread still computes.
        flight.budget.abandoned.set()
        self._land(key, flight)  # a new request for the same render starts afresh

    def _land(self, key: RenderKey, flight: Flight) -> None:
        """The flight is over (or given up): later requests for its key start another."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # retrieved: a render nobody waits for fails quietly

    async def _compute(self, key: RenderKey, budget: Budget, output: str,
                       query: dict[str, Any]) -> Rendered:
        source = key[0]
        loaded = await self.load(source.job_id, source.step)
        renderer = kinds()[loaded.config["kind"]].outputs[output].render

        def run() -> Rendered:
            with stop_check(budget.check):
                return renderer(loaded.model, loaded.meta, **query)

        started, outcome = time.monotonic(), "failed"
        try:
            rendered = await self._off_loop(run)
            outcome = "done"
        except RenderAbandoned:
            outcome = "abandoned"
            raise
        except RenderTimeout:
            outcome = "timed out"
            raise
        finally:  # one line per computation, however it ended
            log.info("render %s after %.1f s: %s %s", outcome, time.monotonic() - started,
                     output, query)
        self._outputs.put(key, rendered)
        return rendered

    async def query(self, job_id: str, coords: torch.Tensor,
                    step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Routed predictions at (N, in_dim) coordinates: values (N, C), expert ids (N,)."""
        model = (await self.load(job_id, step)).model
        return await self._off_loop(lambda: model.predict(coords))

    def forget(self, job_id: str) -> None:
        self._models.drop(lambda key: key.job_id != job_id)
        self._outputs.drop(lambda key: key[0].job_id != job_id)

    def close(self) -> None:
        """Abandon every render in progress (the app is stopping): their threads stop at their
        next chunk, so the process exits without waiting for them."""
        for key, flight in list(self._flights.items()):
            self._abandon(key, flight)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; ClientDisconnected as soon as the client hangs up, `work` cancelled."""
    with anyio.CancelScope() as scope:
        watcher = asyncio.create_task(_cancel_on_disconnect(request, scope))
        try:
            return await work
        finally:
            watcher.cancel()
    raise ClientDisconnected("the client closed the connection before the answer was ready")


async def _cancel_on_disconnect(request: Request, scope: anyio.CancelScope) -> None:
    # A GET's empty body comes first; then the server has nothing more to say until the
    # connection closes (or the answer is sent, and this watch is over).
    while (await request.receive())["type"] != "http.disconnect":
        pass
    scope.cancel()

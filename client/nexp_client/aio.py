"""The asyncio client: `AsyncClient` and its `AsyncJob`s, the same methods as `Client`'s."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from nexp_client import _calls as calls
from nexp_client._calls import DEFAULT_RETRY, Call, Follower, Retry, ServerSentEvents
from nexp_client.client import JobData

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio: the same arguments and methods, each awaited."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 retry: Retry = DEFAULT_RETRY, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = calls.base_url(url)
        self.retry = retry
        self.http = httpx.AsyncClient(base_url=self.url, headers=calls.auth_headers(token),
                                      timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self, call: Call[T]) -> T:
        """Send `call`, again while the retry policy says so, and decode its answer."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.send(call.request(self.http))
            except httpx.TransportError as e:
                wait = self.retry.after_error(e, attempt)
                if wait is None:
                    raise
            else:
                wait = self.retry.after_response(response, attempt)
                if wait is None:
                    return call.result(response)
            await asyncio.sleep(wait)

    async def fit(self, path: str | Path, preset: str = "fast", steps: int | None = None, *,
                  idempotency_key: str | None = None, **options: Any) -> AsyncJob:
        """As `Client.fit`."""
        return AsyncJob(self, await self.run(calls.create(
            path, {"preset": preset, "steps": steps, **options}, idempotency_key)))

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, await self.run(calls.get(job_id)))

    async def jobs(self, status: str | None = None, limit: int = 20, offset: int = 0) -> list[AsyncJob]:
        page = await self.run(calls.listing(status, limit, offset))
        return [AsyncJob(self, item) for item in page["items"]]


class AsyncJob(JobData):
    """`Job` for asyncio (see its methods' documentation)."""

    def __init__(self, client: AsyncClient, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    async def refresh(self) -> AsyncJob:
        self.data = await self.client.run(calls.get(self.id))
        return self

    async def wait(self, progress: bool = False, timeout: float | None = None) -> AsyncJob:
        follower = Follower(self.data, progress, timeout)
        try:
            await self.follow_events(follower)
        except (httpx.HTTPError, ValueError):
            pass  # the stream broke or spoke garbage: polling finds the outcome
        while not follower.finished:
            follower.check_time()
            follower.on_job(await self.client.run(calls.get(self.id)))
            if not follower.finished:
                await asyncio.sleep(calls.POLL_S)
        self.data = follower.job
        follower.result()
        return self

    async def follow_events(self, follower: Follower) -> None:
        http = self.client.http
        response = await http.send(calls.events_request(http, self.id), stream=True)
        try:
            if response.is_error:
                return
            parser = ServerSentEvents()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    follower.on_event(*event)
                if follower.finished:
                    return
                follower.check_time()
        finally:
            await response.aclose()

    async def reconstruction(self, width: int | None = None, height: int | None = None,
                             sample_rate: int | None = None) -> Any:
        return await self.client.run(calls.render(self.id, "reconstruction", width=width,
                                                  height=height, sample_rate=sample_rate))

    async def experts(self, width: int | None = None, height: int | None = None,
                      sample_rate: int | None = None) -> Any:
        return await self.client.run(calls.render(self.id, "experts", width=width, height=height,
                                                  sample_rate=sample_rate))

    async def mesh(self, resolution: int | None = None, format: str | None = None,
                   experts: bool | None = None) -> Any:
        return await self.client.run(calls.mesh(self.id, resolution, format, experts))

    async def query(self, coords: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return await self.client.run(calls.query(self.id, coords))

    async def metrics(self) -> dict[str, float | None]:
        result: dict[str, float | None] = await self.client.run(calls.metrics(self.id))
        return result

    async def weights(self, path: str | Path) -> Path:
        target = Path(path)
        archive = await self.client.run(calls.weights(self.id))
        target.write_bytes(archive)
        return target

    async def cancel(self) -> AsyncJob:
        self.data = await self.client.run(calls.cancel(self.id))
        return self

    async def delete(self) -> None:
        await self.client.run(calls.delete(self.id))

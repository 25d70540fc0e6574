"""The blocking client: `Client` and the `Job`s it returns."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from nexp_client import _calls as calls
from nexp_client._calls import DEFAULT_RETRY, Call, Follower, Retry, ServerSentEvents

T = TypeVar("T")


class JobData:
    """What a job object says about itself (as GET /v1/jobs/{id} returned it last)."""

    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def kind(self) -> str:
        """image, audio or sdf."""
        return str(self.data["kind"])

    @property
    def status(self) -> str:
        """queued, running, succeeded, failed or canceled."""
        return str(self.data["status"])

    @property
    def progress(self) -> dict[str, Any] | None:
        return self.data.get("progress")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.data.get("error")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.kind} {self.status}>"


class Client:
    """The service at `url` (default: $NEXP_URL, else http://127.0.0.1:8000), with the API key
    `token` (default: $NEXP_TOKEN; none while the service has no keys).

    Every call retries 429 and 503 after their Retry-After, and connection errors with backoff,
    as `retry` says; any other error answer raises ApiError.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 retry: Retry = DEFAULT_RETRY, transport: httpx.BaseTransport | None = None) -> None:
        self.url = calls.base_url(url)
        self.retry = retry
        self.http = httpx.Client(base_url=self.url, headers=calls.auth_headers(token),
                                 timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def run(self, call: Call[T]) -> T:
        """Send `call`, again while the retry policy says so, and decode its answer."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.send(call.request(self.http))
            except httpx.TransportError as e:
                wait = self.retry.after_error(e, attempt)
                if wait is None:
                    raise
            else:
                wait = self.retry.after_response(response, attempt)
                if wait is None:
                    return call.result(response)
            time.sleep(wait)

    def fit(self, path: str | Path, preset: str = "fast", steps: int | None = None, *,
            idempotency_key: str | None = None, **options: Any) -> Job:
        """Upload a signal and queue its fit. `options` are the service's form fields: lr, model,
        experts, activation, protocol, seed, webhook, webhook_events (a list). One
        Idempotency-Key (random unless given) goes with every retry: never two jobs."""
        return Job(self, self.run(calls.create(path, {"preset": preset, "steps": steps, **options},
                                               idempotency_key)))

    def job(self, job_id: str) -> Job:
        return Job(self, self.run(calls.get(job_id)))

    def jobs(self, status: str | None = None, limit: int = 20, offset: int = 0) -> list[Job]:
        """This key's jobs, newest first, optionally of one status."""
        page = self.run(calls.listing(status, limit, offset))
        return [Job(self, item) for item in page["items"]]


class Job(JobData):
    """A job of the service; its methods call the service each time."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    def refresh(self) -> Job:
        self.data = self.client.run(calls.get(self.id))
        return self

    def wait(self, progress: bool = False, timeout: float | None = None) -> Job:
        """Block until the job finishes, following its server-sent events (polling should the
        stream break); with `progress`, draw a bar on a terminal's stderr. Raises JobFailed when
        it failed or was canceled, TimeoutError after `timeout` seconds."""
        follower = Follower(self.data, progress, timeout)
        try:
            self.follow_events(follower)
        except (httpx.HTTPError, ValueError):
            pass  # the stream broke or spoke garbage: polling finds the outcome
        while not follower.finished:
            follower.check_time()
            follower.on_job(self.client.run(calls.get(self.id)))
            if not follower.finished:
                time.sleep(calls.POLL_S)
        self.data = follower.job
        follower.result()
        return self

    def follow_events(self, follower: Follower) -> None:
        http = self.client.http
        response = http.send(calls.events_request(http, self.id), stream=True)
        try:
            if response.is_error:
                return
            parser = ServerSentEvents()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    follower.on_event(*event)
                if follower.finished:
                    return
                follower.check_time()
        finally:
            response.close()

    def reconstruction(self, width: int | None = None, height: int | None = None,
                       sample_rate: int | None = None) -> Any:
        """Image: a PIL.Image (any size). Audio: (numpy samples, rate), at any rate."""
        return self.client.run(calls.render(self.id, "reconstruction", width=width, height=height,
                                            sample_rate=sample_rate))

    def experts(self, width: int | None = None, height: int | None = None,
                sample_rate: int | None = None) -> Any:
        """Image: the expert map as a PIL.Image. Audio: AudioExperts (numpy ids + segments)."""
        return self.client.run(calls.render(self.id, "experts", width=width, height=height,
                                            sample_rate=sample_rate))

    def mesh(self, resolution: int | None = None, format: str | None = None,
             experts: bool | None = None) -> Any:
        """SDF: the surface as a trimesh.Trimesh; with format= (ply, obj, glb), the file's bytes."""
        return self.client.run(calls.mesh(self.id, resolution, format, experts))

    def query(self, coords: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values (N, C), expert ids (N,)) of the model at `coords` (N, d)."""
        return self.client.run(calls.query(self.id, coords))

    def metrics(self) -> dict[str, float | None]:
        result: dict[str, float | None] = self.client.run(calls.metrics(self.id))
        return result

    def weights(self, path: str | Path) -> Path:
        """Save the checkpoint (safetensors + JSON, zipped) at `path`."""
        target = Path(path)
        target.write_bytes(self.client.run(calls.weights(self.id)))
        return target

    def cancel(self) -> Job:
        self.data = self.client.run(calls.cancel(self.id))
        return self

    def delete(self) -> None:
        """Delete the job and its artifacts (a running job is canceled first)."""
        self.client.run(calls.delete(self.id))

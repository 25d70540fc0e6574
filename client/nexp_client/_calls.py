"""What `Client` and `AsyncClient` share: each API call as a request plus the decoding of its
answer, the retry policy, the server-sent events parser and the progress of a `wait`. The two
clients only do the I/O, one blocking, one with asyncio."""

from __future__ import annotations

import io
import json
import os
import random
import sys
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
import numpy as np
from PIL import Image

from nexp_client.errors import ApiError, JobFailed

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = frozenset({"succeeded", "failed", "canceled"})
POLL_S = 1.0  # the service writes progress about once a second
EVENTS_READ_TIMEOUT_S = 30.0  # the event stream pings every 15 s while nothing happens


def base_url(url: str | None) -> str:
    return (url or os.environ.get("NEXP_URL") or DEFAULT_URL).rstrip("/")


def auth_headers(token: str | None) -> dict[str, str]:
    token = token or os.environ.get("NEXP_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to turn its successful answer into a value."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    headers: dict[str, str] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return http.build_request(self.method, self.path, params=params, json=self.json,
                                  data=self.data, files=self.files, headers=self.headers)

    def result(self, response: httpx.Response) -> T:
        if response.is_error:
            raise ApiError.from_response(response)
        return self.decode(response)


@dataclass(frozen=True)
class Retry:
    """When to send a request again: after 429 or 503 (waiting their Retry-After) and after a
    connection error (waiting a growing, jittered backoff), at most `attempts` tries in all."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 60.0
    statuses: frozenset[int] = field(default=frozenset({429, 503}))

    def after_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to take this answer."""
        if response.status_code not in self.statuses or attempt >= self.attempts:
            return None
        return min(retry_after(response) or self.backoff(attempt), self.max_wait_s)

    def after_error(self, error: httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to raise `error`."""
        return None if attempt >= self.attempts else self.backoff(attempt)

    def backoff(self, attempt: int) -> float:
        # Jitter: clients that failed together do not all come back in the same instant.
        return min(self.backoff_s * 2.0 ** (attempt - 1), self.max_wait_s) * random.uniform(0.5, 1.0)


DEFAULT_RETRY = Retry()


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (it may be a number or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# ----------------------------------------------------------------------------- decoding answers


@dataclass(frozen=True)
class AudioExperts:
    """Which expert each sample of a clip went to, and the runs of one expert."""

    ids: np.ndarray
    """(samples,) integer expert ids."""
    segments: list[dict[str, Any]]
    """[{expert, start, end...}] runs of one expert, as the service reports them."""
    sample_rate: int


def decode_json(response: httpx.Response) -> Any:
    return response.json()


def decode_nothing(response: httpx.Response) -> None:
    return None


def decode_bytes(response: httpx.Response) -> bytes:
    return response.content


def decode_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(samples, rate): float samples in [-1, 1], (n,) or (n, channels)."""
    try:
        import soundfile  # type: ignore[import-untyped]
    except ImportError:  # optional: 16-bit PCM, the service's default, needs only `wave`
        return decode_pcm16(data)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, int(rate)


def decode_pcm16(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as clip:
        if clip.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM decodes without soundfile (pip install soundfile)")
        frames = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
        channels, rate = clip.getnchannels(), clip.getframerate()
    samples = frames.astype(np.float32) / 32768.0
    return (samples if channels == 1 else samples.reshape(-1, channels)), rate


def decode_render(response: httpx.Response) -> Any:
    """A rendered output by its media type: PNG as an image, WAV as (samples, rate), audio
    expert ids (JSON) as AudioExperts."""
    media_type = response.headers.get("content-type", "").split(";")[0]
    if media_type == "image/png":
        return decode_image(response.content)
    if media_type in ("audio/wav", "audio/x-wav"):
        return decode_wav(response.content)
    if media_type == "application/json":
        body = response.json()
        return AudioExperts(np.asarray(body["expert_ids"], dtype=np.int64), body["segments"],
                            int(body["sample_rate"]))
    return response.content


def decode_mesh(response: httpx.Response) -> Any:
    import trimesh

    return trimesh.load(io.BytesIO(response.content), file_type="ply", process=False)


def decode_query(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    body = response.json()
    return np.asarray(body["values"], dtype=np.float32), np.asarray(body["experts"], dtype=np.int64)


# ----------------------------------------------------------------------------- the calls


def job_path(job_id: str, action: str = "") -> str:
    return f"/v1/jobs/{job_id}" + (f"/{action}" if action else "")


def create(path: str | Path, options: dict[str, Any], idempotency_key: str | None) -> Call[Any]:
    """POST /v1/jobs. The key is chosen here, once, so every retry of this call sends the same."""
    file = Path(path)
    form = {name: form_value(value) for name, value in options.items() if value is not None}
    return Call("POST", "/v1/jobs", decode_json, data=form,
                files={"file": (file.name, file.read_bytes())},
                headers={"idempotency-key": idempotency_key or uuid.uuid4().hex})


def form_value(value: Any) -> str | list[str]:
    """A form field: lists as repeated fields, booleans as the service reads them."""
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return str(value).lower() if isinstance(value, bool) else str(value)


def get(job_id: str) -> Call[Any]:
    return Call("GET", job_path(job_id), decode_json)


def listing(status: str | None, limit: int, offset: int) -> Call[Any]:
    return Call("GET", "/v1/jobs", decode_json,
                params={"status": status, "limit": limit, "offset": offset})


def cancel(job_id: str) -> Call[Any]:
    return Call("POST", job_path(job_id, "cancel"), decode_json)


def delete(job_id: str) -> Call[None]:
    return Call("DELETE", job_path(job_id), decode_nothing)


def render(job_id: str, output: str, **params: Any) -> Call[Any]:
    return Call("GET", job_path(job_id, output), decode_render, params=params)


def mesh(job_id: str, resolution: int | None, format: str | None, experts: bool | None) -> Call[Any]:
    """A trimesh.Trimesh, or with `format` (ply, obj, glb) the file's bytes."""
    if format is None:
        try:
            import trimesh  # noqa: F401
        except ImportError as e:
            raise ImportError("job.mesh() returns a trimesh.Trimesh: pip install trimesh, or ask "
                              "for the file's bytes with format='ply', 'obj' or 'glb'") from e
    params = {"resolution": resolution, "format": format or "ply",
              "experts": None if experts is None else str(experts).lower()}
    return Call("GET", job_path(job_id, "mesh"), decode_bytes if format else decode_mesh, params=params)


def query(job_id: str, coords: Sequence[Sequence[float]] | np.ndarray) -> Call[tuple[np.ndarray, np.ndarray]]:
    points = np.asarray(coords, dtype=np.float64).tolist()
    return Call("POST", job_path(job_id, "query"), decode_query, json={"coords": points})


def metrics(job_id: str) -> Call[Any]:
    return Call("GET", job_path(job_id, "metrics"), decode_json)


def weights(job_id: str) -> Call[bytes]:
    return Call("GET", job_path(job_id, "weights"), decode_bytes)


def events_request(http: httpx.Client | httpx.AsyncClient, job_id: str) -> httpx.Request:
    timeout = httpx.Timeout(http.timeout.connect, read=EVENTS_READ_TIMEOUT_S)
    return http.build_request("GET", job_path(job_id, "events"), timeout=timeout,
                              headers={"accept": "text/event-stream"})


# ----------------------------------------------------------------------------- following a job


@dataclass
class ServerSentEvents:
    """Parses a text/event-stream a line at a time (the WHATWG format, as the service writes it)."""

    event: str = "message"
    data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, Any] | None:
        """(event, JSON data) when `line` ends an event, else None."""
        if line == "":
            if not self.data:
                return None
            ended = (self.event, json.loads("\n".join(self.data)))
            self.event, self.data = "message", []
            return ended
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None  # comments (": ping"), ids and retry hints change nothing here


class Follower:
    """A job being waited for: fed events or polled states, it draws the progress and tells when
    the job has finished."""

    def __init__(self, job: dict[str, Any], progress: bool, timeout: float | None,
                 stream: IO[str] | None = None) -> None:
        self.job = job
        self.stream = stream or sys.stderr
        self.draw = progress and self.stream.isatty()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout

    def check_time(self) -> None:
        """Raises TimeoutError once the wait's `timeout` has passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job.get('id')} is still {self.job.get('status')} after "
                               f"{self.timeout:g} s")

    @property
    def finished(self) -> bool:
        return self.job.get("status") in FINISHED

    def on_event(self, event: str, data: Any) -> None:
        if event == "progress":
            self.show(data)
        elif event == "status":
            self.on_job(data)

    def on_job(self, job: dict[str, Any]) -> None:
        self.job = job
        if job.get("progress"):
            self.show(job["progress"])

    def show(self, progress: dict[str, Any]) -> None:
        if not self.draw:
            return
        step, total = progress.get("step", 0), max(progress.get("total", 1), 1)
        width = 30
        done = int(width * step / total)
        loss = progress.get("loss")
        eta = progress.get("eta_s")
        text = (f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} {progress.get('stage', '')}"
                + (f" loss {loss:.4g}" if loss is not None else "")
                + (f" eta {eta:.0f}s" if eta is not None else ""))
        self.stream.write(text.ljust(80))
        self.stream.flush()

    def result(self) -> dict[str, Any]:
        """The finished job; raises JobFailed unless it succeeded."""
        if self.draw:
            self.stream.write("\n")
        status = self.job.get("status")
        if status == "failed":
            error = self.job.get("error") or {}
            raise JobFailed(error.get("code", "internal"), error.get("detail", ""), self.job)
        if status == "canceled":
            raise JobFailed("canceled", "the job was canceled", self.job)
        return self.job

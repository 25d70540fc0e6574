"""Renders only run while someone waits: over real HTTP to a uvicorn subprocess, a render stops
when its client hangs up, identical renders in progress are computed once, each key has a
render allowance (429), a render has a time limit (503), and shutdown waits no longer than it.

The jobs are succeeded rows with real checkpoints of the default image model (untrained: it
renders at the same speed), written to the service's database and store: no worker runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model.checkpoint import CONFIG, METRICS, WEIGHTS, save_checkpoint
from model.fit import FitOptions, build_model
from model.signals import load_signal
from service import keys
from service.jobs import Status
from service.settings import Settings
from service.storage import checkpoint_key
from tests.utils.jobs import add_job, context
from tests.utils.service import STOP_TIMEOUT_S, Service, assert_problem

TIMEOUT_S = 5  # NEXP_RENDER_TIMEOUT_S: the long renders below would take 10 to 40 s
BIG = 2048  # a side: 4.2M pixels take ~40 s on one core, well past the time limit
IDLE_CPU_S = 0.15  # CPU seconds a second of an idle API may use (its background loops)


def service_env(data: Path) -> dict[str, str]:
    return {
        "NEXP_DATA_DIR": str(data),
        "NEXP_QUEUE": f"nexp.test.{uuid.uuid4().hex}",  # the embedded broker: no worker reads it
        "NEXP_DEVICE": "cpu",
        "NEXP_TORCH_THREADS": "1",  # one core per render: a computing render is ~1 CPU s/s
        "NEXP_MAX_RENDER_PIXELS": str(BIG * BIG),
        "NEXP_RENDER_TIMEOUT_S": str(TIMEOUT_S),
        "NEXP_RENDERS_PER_KEY": "2",
        "NEXP_RENDER_CACHE_BYTES": "0",  # every request computes unless it shares a computation
    }


def seed_jobs(data: Path, kodak_crop: Path, owners: list[str | None]) -> list[str]:
    """A succeeded image job per owner, each with a checkpoint of the default model."""
    signal_ = load_signal(kodak_crop)
    model = build_model(signal_, FitOptions())
    folder = data / "checkpoint"
    save_checkpoint(folder, model, {"kind": "image", "model": model.config.to_dict(),
                                    "signal": signal_.meta()}, {})
    ctx = context(Settings(data_dir=data))
    try:
        job_ids = []
        for owner in owners:
            with ctx.sessions() as session:
                job_id = add_job(session, status=Status.SUCCEEDED, owner=owner).id
            for name in (CONFIG, METRICS, WEIGHTS):
                ctx.storage.put(checkpoint_key(job_id, name), (folder / name).read_bytes())
            job_ids.append(job_id)
        return job_ids
    finally:
        ctx.engine.dispose()


def make_key(data: Path, name: str) -> tuple[str, str]:
    """(id, token) of a new API key in the service's database."""
    ctx = context(Settings(data_dir=data))
    try:
        with ctx.sessions() as session:
            key, token = keys.create(session, name)
            return key.id, token
    finally:
        ctx.engine.dispose()


@dataclass
class Renders:
    """The API, and for each of two keys its token and one job of its own."""

    service: Service
    tokens: tuple[str, str]
    jobs: tuple[str, str]

    @property
    def pid(self) -> int:
        return self.service.processes["api"].pid

    def get(self, path: str, key: int) -> httpx.Response:
        return get(self.service, path, self.tokens[key])


def get(service: Service, path: str, token: str | None = None) -> httpx.Response:
    with service.client() as client:
        return client.get(path, headers=bearer(token))


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def image(job_id: str, output: str, width: int, height: int) -> str:
    return f"/v1/jobs/{job_id}/{output}?width={width}&height={height}"


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory, kodak_crop: Path) -> Iterator[Renders]:
    data = tmp_path_factory.mktemp("renders")
    (a_id, a_token), (b_id, b_token) = make_key(data, "a"), make_key(data, "b")
    jobs = seed_jobs(data, kodak_crop, [a_id, b_id])
    service = Service(data, service_env(data))
    try:
        service.start_api()
        yield Renders(service, (a_token, b_token), (jobs[0], jobs[1]))
    finally:
        service.stop_all()


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, all its threads together (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15


def cpu_used(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


@contextmanager
def hung_up_later(service: Service, path: str, token: str | None = None) -> Iterator[None]:
    """A GET on a connection of its own, closed without reading the answer when the block ends."""
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        headers = "".join(f"{name}: {value}\r\n" for name, value in bearer(token).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        yield


def computations(service: Service, job_id: str, query: str) -> list[str]:
    """The API's log lines for computations of `query` on the job, one per computation."""
    lines = (json.loads(line) for line in (service.data / "api.log").read_text().splitlines()
             if line.startswith("{"))
    return [line["message"] for line in lines
            if line["job_id"] == job_id and line["message"].startswith("render ")
            and query in line["message"]]


def test_a_render_stops_when_its_client_hangs_up(renders: Renders) -> None:
    with hung_up_later(renders.service, image(renders.jobs[0], "reconstruction", BIG, BIG),
                       renders.tokens[0]):
        busy = cpu_used(renders.pid, 1.0)
    time.sleep(0.3)  # the hang-up reaches the server, the render thread ends its chunk
    idle = cpu_used(renders.pid, 1.0)  # over well before the time limit would stop it
    assert busy > 0.3, f"the render did not run: {busy:.2f} CPU s in its first second"
    assert idle < IDLE_CPU_S, f"the render went on after its client left: {idle:.2f} CPU s/s"
    log = computations(renders.service, renders.jobs[0], "'width': 2048")
    assert len(log) == 1 and log[0].startswith("render abandoned"), log


def test_identical_renders_in_progress_are_computed_once(renders: Renders) -> None:
    path = image(renders.jobs[0], "reconstruction", 400, 400)  # ~1.5 s to compute on one core
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: renders.get(path, 0), range(2)))
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].content == answers[1].content
    log = computations(renders.service, renders.jobs[0], "'width': 400")
    assert len(log) == 1 and log[0].startswith("render done"), log


def test_a_key_past_its_renders_gets_429_and_abandoned_renders_free_their_slots(
        renders: Renders) -> None:
    small = [image(job_id, "experts", 16, 16) for job_id in renders.jobs]
    with ThreadPoolExecutor(1) as pool, ExitStack() as big_renders:
        for height in (1024, 1000):  # two computations: both render threads busy for seconds
            path = image(renders.jobs[0], "reconstruction", 1024, height)
            big_renders.enter_context(hung_up_later(renders.service, path, renders.tokens[0]))
        time.sleep(0.5)
        refused = renders.get(small[0], 0)
        assert_problem(refused, 429, "too_many_renders")
        assert int(refused.headers["Retry-After"]) >= 1
        other_key = pool.submit(renders.get, small[1], 1)  # its own allowance: queued, not refused
        time.sleep(0.5)
        assert not other_key.done(), "both render threads should be busy"
        dropped = time.monotonic()
    answer = other_key.result()
    waited = time.monotonic() - dropped
    assert answer.status_code == 200, answer.text
    assert waited < 1.5, f"a 16x16 map waited {waited:.1f} s behind abandoned renders"
    assert renders.get(small[0], 0).status_code == 200  # the key's renders are over


def test_a_render_past_its_time_limit_stops_with_503(renders: Renders) -> None:
    started = time.monotonic()
    answer = renders.get(image(renders.jobs[1], "reconstruction", BIG, BIG - 1), 1)
    elapsed = time.monotonic() - started
    body = assert_problem(answer, 503, "render_timeout")
    assert "NEXP_RENDER_TIMEOUT_S" in body["detail"]
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 3, elapsed
    idle = cpu_used(renders.pid, 1.0)
    assert idle < IDLE_CPU_S, f"the render went on past its time limit: {idle:.2f} CPU s/s"


def test_shutdown_waits_for_a_render_no_longer_than_its_time_limit(
        tmp_path: Path, kodak_crop: Path) -> None:
    (job_id,) = seed_jobs(tmp_path, kodak_crop, [None])  # auth off
    service = Service(tmp_path, service_env(tmp_path))
    try:
        service.start_api()
        api = service.processes["api"]
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(get, service, image(job_id, "reconstruction", BIG, BIG))
            time.sleep(1)
            started = time.monotonic()
            api.send_signal(signal.SIGINT)  # uvicorn waits for open requests, then stops
            api.wait(TIMEOUT_S + STOP_TIMEOUT_S)
            stopped = time.monotonic() - started
            assert_problem(waiting.result(), 503, "render_timeout")
        assert stopped < TIMEOUT_S + 3, f"the API took {stopped:.1f} s to stop"
    finally:
        service.stop_all()

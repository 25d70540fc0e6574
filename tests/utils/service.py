"""The real service for tests: uvicorn and Celery worker subprocesses sharing one data folder.

Each process writes its log beside the data, and a failure message quotes the logs' tails.
Every process starts in a session of its own, so a test can kill a worker with its pool
children, and teardown never leaves one behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service import jobs
from service.context import Context
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90  # importing torch twice on a busy 2-core machine
STOP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the process, then kill its whole session if it has not exited in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # pool children that outlived their parent
    except ProcessLookupError:
        pass
    process.wait()


@dataclass
class Service:
    """An API and a worker on `data`, configured by `env` (NEXP_* variables)."""

    data: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data / f"{name}.log").open("ab")
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **self.env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def start_api(self) -> None:
        self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host",
                           "127.0.0.1", "--port", str(self.port)])
        self.wait_until(lambda: self.answers("/healthz"), "the API to answer /healthz")

    def start_worker(self) -> None:
        ready = self.logs_from_now("worker", b" ready.")
        # -q: no start-up banner on stdout, so every line the worker writes is a JSON log line.
        self.spawn("worker", [sys.executable, "-m", "celery", "-q", "-A", "worker.celery_app", "worker",
                              "--loglevel=INFO", "--without-gossip", "--without-mingle"])
        self.wait_until(ready, "the worker to be ready")

    def logs_from_now(self, name: str, marker: bytes) -> Callable[[], bool]:
        """A check that process `name` has logged `marker` since this call."""
        log = self.data / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        return lambda: log.exists() and marker in log.read_bytes()[start:]

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            # The worker's cold shutdown: a warm one would wait for a training job to end.
            stop(process, signal.SIGQUIT if name == "worker" else signal.SIGTERM)

    def answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(f"{name} exited with {process.returncode} while waiting for "
                                f"{what}\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.data.glob("*.log")))

    def row(self, job_id: str) -> jobs.Job:
        """The job's database row, with what the API does not show (the worker's pid)."""
        ctx = Context.build(Settings(data_dir=self.data,
                                     database_url=self.env.get("NEXP_DATABASE_URL", "")))
        try:
            with ctx.sessions() as session:
                row = jobs.get(session, job_id)
        finally:
            ctx.engine.dispose()
        assert row is not None, f"job {job_id} has no row"
        return row


def create_job(client: httpx.Client, path: Path, content_type: str | None = None,
               headers: dict[str, str] | None = None, **options: Any) -> httpx.Response:
    file = (path.name, path.read_bytes(), content_type) if content_type else (path.name,
                                                                               path.read_bytes())
    return client.post("/v1/jobs", files={"file": file},
                       data={k: str(v) for k, v in options.items()}, headers=headers)


def submit(client: httpx.Client, path: Path, **options: Any) -> dict[str, Any]:
    response = create_job(client, path, **options)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for(client: httpx.Client, job_id: str, until: Any, what: str,
             timeout: float = 180) -> dict[str, Any]:
    """Poll the job until `until(job)` holds; fails with the job as last seen."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not reach {what} in {timeout} s; last seen: {job}")


def wait_status(client: httpx.Client, job_id: str, *statuses: str,
                timeout: float = 180) -> dict[str, Any]:
    return wait_for(client, job_id, lambda job: job["status"] in statuses,
                    " or ".join(statuses), timeout)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


def started(service: Service) -> Iterator[Service]:
    """The service running (worker, then API) until the generator closes; then its queue is gone."""
    try:
        service.start_worker()
        service.start_api()
        yield service
    finally:
        service.stop_all()
        forget_queue(service.env)


def forget_queue(env: dict[str, str]) -> None:
    """Drop what is left of the service's queue (redelivery retries) from Redis."""
    if env.get("NEXP_BROKER_URL", "").startswith("redis://"):
        client = redis.Redis.from_url(env["NEXP_BROKER_URL"])
        queue = env["NEXP_QUEUE"]
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()

"""The real service for tests: uvicorn and Celery worker subprocesses sharing one data folder
(service.harness, which the benchmarks use too), and the requests tests make of it.

Each process writes its log beside the data, and a failure message quotes the logs' tails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import redis

from service import jobs
from service.context import Context
from service.harness import REPO as REPO  # re-exported: tests take all they need from here
from service.harness import START_TIMEOUT_S as START_TIMEOUT_S
from service.harness import STOP_TIMEOUT_S as STOP_TIMEOUT_S
from service.harness import Harness
from service.harness import free_port as free_port
from service.harness import stop as stop
from service.settings import Settings


@dataclass
class Service(Harness):
    """An API and a worker on `data`, configured by `env` (NEXP_* variables)."""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def fail(self, message: str) -> NoReturn:
        pytest.fail(message)

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

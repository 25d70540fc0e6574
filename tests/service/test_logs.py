"""service.logs: JSON lines with request and job ids, from the real API and worker processes."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from service import logs
from tests.utils.service import Service, create_job, wait_status


def record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("nexp.test", logging.WARNING, __file__, 1, message, None, exc_info)


def test_a_line_is_one_json_object_with_the_context_ids() -> None:
    def in_a_request() -> dict[str, Any]:
        logs.begin("req-1")
        logs.bind_job("job-1")
        try:
            raise ValueError("bad\nnews")
        except ValueError as e:
            line = logs.JsonFormatter().format(record("two\nlines", e))
        assert "\n" not in line
        return dict(json.loads(line))

    line = contextvars.copy_context().run(in_a_request)
    assert line["message"] == "two\nlines" and line["level"] == "WARNING"
    assert line["logger"] == "nexp.test" and line["time"].endswith("+00:00")
    assert (line["request_id"], line["job_id"]) == ("req-1", "job-1")
    assert "ValueError: bad\nnews" in line["exception"]
    outside = json.loads(logs.JsonFormatter().format(record("no request")))
    assert outside["request_id"] is None and outside["job_id"] is None


def test_a_job_id_learnt_in_a_thread_reaches_the_request() -> None:
    """A sync route runs on a copy of the request's context; its job id must come back."""
    def in_a_request() -> str | None:
        logs.begin("req-1")
        thread = threading.Thread(target=contextvars.copy_context().run,
                                  args=(logs.bind_job, "job-1"))
        thread.start()
        thread.join()
        return logs.current().job_id

    assert contextvars.copy_context().run(in_a_request) == "job-1"


SPEAKERS = """
import logging, warnings
import billiard.util
from service.logs import configure_logging
configure_logging("INFO")
billiard.util.get_logger().error("Process %r exited with %r", "ForkPoolWorker-1", "exitcode 1")
logging.getLogger("uvicorn.access").info("GET / 200")
logging.getLogger("nexp").debug("below the level")
warnings.warn("a library's warning")
"""


def test_pool_uvicorn_and_warning_lines_are_json_too() -> None:
    run = subprocess.run([sys.executable, "-c", SPEAKERS], capture_output=True, text=True,
                         timeout=60, check=True)
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    assert [line["logger"] for line in lines] == ["multiprocessing", "uvicorn.access", "py.warnings"]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output, each of which must be a JSON object."""
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {text!r}") from None
    return lines


def job_lines(path: Path, job_id: str, marker: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(path) if line["job_id"] == job_id and marker in line["message"]]


def test_api_and_worker_lines_are_json_and_follow_a_job(service: Service, client: httpx.Client,
                                                       kodak_crop: Path) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    response = create_job(client, kodak_crop, headers={"X-Request-ID": request_id}, steps=5)
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == request_id
    job_id = response.json()["id"]
    assert wait_status(client, job_id, "succeeded", "failed", "canceled")["status"] == "succeeded"
    # Celery logs "succeeded" just after the job row says so.
    worker_log, api_log = service.data / "worker.log", service.data / "api.log"
    service.wait_until(lambda: bool(job_lines(worker_log, job_id, "succeeded")),
                       "the worker's line for the finished task")

    worker = [line for line in json_lines(worker_log) if line["job_id"] == job_id]
    assert {line["logger"] for line in worker} >= {"worker.runner", "celery.app.trace"}, worker
    assert {line["request_id"] for line in worker} == {request_id}, worker
    mentions = [line for line in json_lines(worker_log) if job_id in line["message"]]
    assert all(line["job_id"] == job_id for line in mentions), mentions

    api = json_lines(api_log)
    created = [line for line in api if line["request_id"] == request_id]
    assert any(line["logger"] == "uvicorn.access" and "POST /v1/jobs" in line["message"]
               for line in created), created
    assert all(line["job_id"] == job_id for line in created), created
    polls = [line for line in api if line["job_id"] == job_id and f"GET /v1/jobs/{job_id} " in
             line["message"]]
    assert polls and all(line["request_id"] not in (None, request_id) for line in polls), polls


def test_a_request_without_a_usable_id_gets_a_new_one(client: httpx.Client) -> None:
    for headers in ({}, {"X-Request-ID": "not an id; " + "x" * 200}):
        given = client.get("/healthz", headers=headers).headers["x-request-id"]
        assert re.fullmatch("[0-9a-f]{32}", given), given

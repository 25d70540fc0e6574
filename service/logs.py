"""Structured logs for the API and the worker: one JSON object a line, on stderr.

Every line carries the request id and the job id of the work it belongs to, taken from a
context variable that the API's RequestId middleware sets for a request (the routes add the job
id) and the worker sets around a job (with the id of the request that created it, which travels
in the task message). A log collector can then follow one job across API replicas and workers.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

# uvicorn gives these loggers handlers of their own (plain text) and stops them propagating.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# billiard (Celery's pool) logs "Process ... exited" here and keeps it from propagating: without a
# handler of its own, Python's last-resort handler would print it as plain text.
POOL_LOGGER = "multiprocessing"


@dataclass
class Fields:
    """The ids on the lines of one request or one job.

    Mutable, and shared by reference: a sync route runs in a thread on a *copy* of the request's
    context, and a job id it learns there must still reach the lines written back on the event
    loop (uvicorn's access line).
    """

    request_id: str | None = None
    job_id: str | None = None


_fields: ContextVar[Fields | None] = ContextVar("nexp_log_fields", default=None)


def current() -> Fields:
    return _fields.get() or Fields()


def begin(request_id: str | None = None, job_id: str | None = None) -> None:
    """Tag this context's lines from now on (a new request, a new task)."""
    _fields.set(Fields(request_id, job_id))


def bind_job(job_id: str) -> None:
    """Add the job id to the current request's or task's lines, from any thread serving it."""
    fields = _fields.get()
    if fields is None:
        _fields.set(Fields(job_id=job_id))
    else:
        fields.job_id = job_id


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = current()  # formatting runs in the thread that logged: its context
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": fields.request_id,
            "job_id": fields.job_id,
            "process": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure_logging(level: int | str) -> None:
    """JSON lines on stderr for every logger: the root's handler, uvicorn's loggers routed to it,
    and Python warnings as log records. Safe to call again (a pool child, a second app)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h.formatter, JsonFormatter)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    pool = logging.getLogger(POOL_LOGGER)
    if handler not in pool.handlers:
        pool.addHandler(handler)
    pool.setLevel(logging.ERROR)  # as Celery's own set-up: below that it is per-process chatter
    logging.captureWarnings(True)

"""Prometheus metrics: HTTP requests by route; jobs by status, the queue's depth, job run times
and the GPU memory jobs use.

One registry per app (not prometheus_client's global one), so tests can build many apps.
Job figures and queue depth are read from the job table and the broker when Prometheus scrapes,
not kept up to date in memory: several API replicas then report the same, true numbers, and the
workers (on other machines) need no endpoint of their own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from datetime import timedelta

from celery import Celery
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import jobs
from service.context import Context
from service.jobs import Job, Status
from worker.celery_app import queue_depth

log = logging.getLogger(__name__)

RECENT = timedelta(hours=1)  # run times and GPU peaks: jobs running now or finished this recently
QUANTILES = (0.5, 0.9, 1.0)


class RequestMetrics:
    """ASGI middleware counting requests and their latency by method, route template and status."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("nexp_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("nexp_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # a template: few labels
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


class JobsCollector(Collector):
    def __init__(self, ctx: Context, celery: Celery) -> None:
        self.ctx, self.celery = ctx, celery

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("nexp_jobs", "Jobs by status", labels=["status"])
        with self.ctx.sessions() as session:
            counts = jobs.count_by_status(session)
        for status in jobs.Status:
            by_status.add_metric([status.value], counts.get(status, 0))
        yield by_status
        with self.ctx.sessions() as session:
            yield from job_times(session)
        try:
            depth = queue_depth(self.celery)
        except Exception:  # a scrape must not fail because the broker is away: readyz says so
            log.warning("queue depth unavailable", exc_info=True)
            return
        yield GaugeMetricFamily("nexp_queue_depth", "Jobs waiting in the broker", value=depth)


def job_times(session: Session) -> Iterator[Metric]:
    """How long jobs wait and run, and the GPU memory they take, from the job table."""
    now = jobs.utcnow()
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == Status.QUEUED))
    yield GaugeMetricFamily("nexp_job_queued_seconds_max", "How long the oldest queued job has "
                            "waited", value=(now - oldest).total_seconds() if oldest else 0.0)
    rows = session.execute(
        select(Job.status, Job.started_at, Job.finished_at, Job.progress)
        .where(Job.started_at.is_not(None))
        .where((Job.status == Status.RUNNING) | (Job.finished_at >= now - RECENT))
    ).tuples().all()
    running = [(now - started).total_seconds() for status, started, _, _ in rows
               if status == Status.RUNNING]
    yield GaugeMetricFamily("nexp_job_running_seconds_max", "How long the longest-running job "
                            "has run", value=max(running, default=0.0))
    durations = GaugeMetricFamily(
        "nexp_job_duration_seconds", "Run time (start to finish) of the jobs that finished in "
        f"the last {RECENT.total_seconds():g} s, by outcome", labels=["status", "quantile"])
    by_status: dict[str, list[float]] = {}
    for status, started, finished, _ in rows:
        if finished is not None:
            by_status.setdefault(status, []).append((finished - started).total_seconds())
    for status, seconds in sorted(by_status.items()):
        for q in QUANTILES:
            durations.add_metric([status, f"{q:g}"], nearest_rank(sorted(seconds), q))
    yield durations
    peaks = [(progress or {}).get("gpu_peak_bytes") or 0 for _, _, _, progress in rows]
    yield GaugeMetricFamily("nexp_gpu_memory_peak_bytes", "Most GPU memory one job allocated, "
                            f"of those running or finished in the last {RECENT.total_seconds():g} s "
                            "(0 when none ran on a GPU)", value=max(peaks, default=0))


def nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

"""Prometheus metrics: HTTP requests by route, jobs by status and the queue's depth.

One registry per app (not prometheus_client's global one), so tests can build many apps.
Job counts and queue depth are read when Prometheus scrapes, not kept up to date in memory:
several API replicas then report the same, true numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from celery import Celery
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker import jobs
from worker.context import Context

log = logging.getLogger(__name__)


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
        try:
            with self.celery.connection_for_read() as conn:
                queue = self.celery.conf.task_default_queue
                depth = conn.default_channel.queue_declare(queue).message_count
        except Exception:  # a scrape must not fail because the broker is away: readyz says so
            log.warning("queue depth unavailable", exc_info=True)
            return
        yield GaugeMetricFamily("nexp_queue_depth", "Jobs waiting in the broker", value=depth)

"""The app: routers, middleware and error handlers, and a lifespan that starts the services.

`uvicorn api.main:app` serves it; `python -m api` also starts a worker beside it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from api import errors
from api.auth import ApiKeyAuth
from api.metrics import JobsCollector, RequestMetrics
from api.middleware import BodyGuard, Cors, RequestId, SecurityHeaders
from api.routes import health, jobs, kinds, options, outputs, page
from api.services import Services
from api.webhooks import deliver_forever
from service import keys
from service.logs import configure_logging
from service.recovery import recover_stale_jobs, republish_lost_messages
from service.retention import expire_jobs
from service.settings import Settings, get_settings
from worker.celery_app import publish_fit, queue_depth

log = logging.getLogger(__name__)

DESCRIPTION = """Fit Neural Experts (mixture-of-experts implicit neural representations) to an
image, an audio clip or a 3D shape, follow the training, and query the fitted model.
Every error is `application/problem+json` with a machine-readable `code`. Once API keys exist
(`nexp keys create`), every /v1 request sends one as `Authorization: Bearer <key>`."""


async def recover_forever(services: Services) -> None:
    """Every half staleness period: requeue (or fail) running jobs whose worker went silent, and
    publish again queued jobs whose message the broker lost."""
    enqueue = partial(publish_fit, services.celery)
    depth = partial(queue_depth, services.celery)
    while True:
        try:
            requeued = await run_in_threadpool(recover_stale_jobs, services.ctx, enqueue)
            if requeued:
                log.warning("requeued jobs whose worker went silent: %s", ", ".join(requeued))
            lost = await run_in_threadpool(republish_lost_messages, services.ctx, enqueue, depth)
            if lost:
                log.warning("published again queued jobs missing from the broker: %s", ", ".join(lost))
        except Exception:  # the database or broker is away: try again next round
            log.exception("stale-job recovery failed")
        await asyncio.sleep(services.ctx.settings.stale_after_s / 2)


async def expire_forever(services: Services) -> None:
    """Delete jobs past NEXP_RETENTION_S. Here rather than in Celery beat: it needs no singleton
    process, never waits behind a long fit for the worker's one slot, and every replica may run
    it at once (service.retention says why that is safe)."""
    while True:
        try:
            expired = await run_in_threadpool(expire_jobs, services.ctx)
            for job_id in expired:
                services.renderer.forget(job_id)
            if expired:
                log.info("deleted expired jobs: %s", ", ".join(expired))
        except Exception:  # the database or storage is away: the next sweep finishes the work
            log.exception("retention sweep failed")
        await asyncio.sleep(services.ctx.settings.retention_sweep_s)


def warn_if_open(services: Services) -> None:
    with services.ctx.sessions() as session:
        if not (services.ctx.settings.require_keys or keys.configured(session)):
            log.warning("no API keys: /v1 is open to anyone who can reach this server "
                        "(`nexp keys create --name NAME` turns auth on)")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.dependency_overrides.get(get_settings, get_settings)()
    services = await run_in_threadpool(Services.start, settings)
    app.state.services = services
    collector = JobsCollector(services.ctx, services.celery)
    app.state.registry.register(collector)
    await run_in_threadpool(warn_if_open, services)
    # What is loaded now (torch, the app) lives as long as the process: kept out of the garbage
    # collector's full passes, each of which would otherwise walk it all, holding the GIL (so the
    # event loop) for ~0.2 s whenever a large query's allocations set one off.
    gc.freeze()
    tasks = [asyncio.create_task(recover_forever(services))]
    if settings.retention_s:
        tasks.append(asyncio.create_task(expire_forever(services)))
    if settings.webhook_secret:  # without one no job can have a webhook (api.routes.jobs)
        tasks.append(asyncio.create_task(deliver_forever(services)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        services.renderer.close()  # renders still computing stop at their next chunk
        app.state.registry.unregister(collector)
        services.close()


def add_problem_schema(app: FastAPI) -> None:
    """Error responses reference #/components/schemas/Problem (api.errors.problems)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            errors.Problem.model_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app() -> FastAPI:
    # JSON log lines from here on: uvicorn imports the app before it logs its first line.
    configure_logging(get_settings().log_level)
    # /docs is api.routes.page's, with Swagger UI served from here, not a CDN; no /redoc.
    app = FastAPI(title="Neural Experts", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.registry = CollectorRegistry()
    errors.install(app)
    for module in (jobs, outputs):  # /v1: api.auth asks for a key
        app.include_router(module.router, responses=errors.problems(401, 403, 408))
    app.include_router(health.router)
    app.include_router(options.router)  # open, as the OpenAPI schema is
    app.include_router(kinds.router)  # open, likewise
    page.install(app)
    # The last middleware added runs first: metrics see every answer, the 401s and 413s included;
    # CORS answers preflights before auth; and a request without a valid key (or, while auth is
    # off, from a foreign Host or another site's page) is refused before its body is read.
    def settings() -> Settings:  # read per request: the services exist once the app started
        return app.state.services.ctx.settings

    app.add_middleware(BodyGuard, settings=settings)
    app.add_middleware(ApiKeyAuth, context=lambda: app.state.services.ctx)
    app.add_middleware(Cors, settings=settings)
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestId)  # outermost: every line logged for a request carries its id
    add_problem_schema(app)
    return app


app = create_app()

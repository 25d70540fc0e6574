"""The app: routers, middleware and error handlers, and a lifespan that starts the services.

`uvicorn api.main:app` serves it; `python -m api` also starts a worker beside it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from api import errors
from api.metrics import JobsCollector, RequestMetrics
from api.middleware import BodySizeLimit, RequestId
from api.routes import health, jobs, outputs, page
from api.services import Services
from worker.celery_app import publish_fit
from worker.logs import configure_logging
from worker.recovery import recover_stale_jobs
from worker.settings import get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Fit Neural Experts (mixture-of-experts implicit neural representations) to an
image, an audio clip or a 3D shape, follow the training, and query the fitted model.
Every error is `application/problem+json` with a machine-readable `code`."""


async def recover_forever(services: Services) -> None:
    """Requeue (or fail) running jobs whose worker went silent, every half staleness period."""
    enqueue = partial(publish_fit, services.celery)
    while True:
        try:
            requeued = await run_in_threadpool(recover_stale_jobs, services.ctx, enqueue)
            if requeued:
                log.warning("requeued jobs whose worker went silent: %s", ", ".join(requeued))
        except Exception:  # the database or broker is away: try again next round
            log.exception("stale-job recovery failed")
        await asyncio.sleep(services.ctx.settings.stale_after_s / 2)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.dependency_overrides.get(get_settings, get_settings)()
    services = await run_in_threadpool(Services.start, settings)
    app.state.services = services
    collector = JobsCollector(services.ctx, services.celery)
    app.state.registry.register(collector)
    recovery = asyncio.create_task(recover_forever(services))
    try:
        yield
    finally:
        recovery.cancel()
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
    app = FastAPI(title="Neural Experts", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.registry = CollectorRegistry()
    errors.install(app)
    for module in (jobs, outputs, health, page):
        app.include_router(module.router)
    # The last middleware added runs first: metrics see every answer, the 413s included.
    app.add_middleware(BodySizeLimit,
                       max_bytes=lambda: app.state.services.ctx.settings.max_upload_bytes)
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    app.add_middleware(RequestId)  # outermost: every line logged for a request carries its id
    add_problem_schema(app)
    return app


app = create_app()

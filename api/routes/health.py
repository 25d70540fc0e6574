"""Liveness, readiness (broker, database, storage) and Prometheus metrics."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import RegistryDep, ServicesDep
from api.errors import NotReady, problems
from api.services import Services
from worker.celery_app import PUBLISH_TIMEOUT_S

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def check_database(services: Services) -> None:
    with services.ctx.sessions() as session:
        session.execute(text("SELECT 1"))


def check_broker(services: Services) -> None:
    with services.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=PUBLISH_TIMEOUT_S)


def check_storage(services: Services) -> None:
    key = f"readyz/{uuid.uuid4().hex}"
    services.ctx.storage.put(key, b"ok")
    try:
        if not services.ctx.storage.exists(key):
            raise OSError("a probe artifact just written is not there")
    finally:
        services.ctx.storage.delete(key)


CHECKS: dict[str, Callable[[Services], None]] = {
    "database": check_database, "broker": check_broker, "storage": check_storage,
}


@router.get("/readyz", responses=problems(503), summary="Broker, database and storage answer")
def readyz(services: ServicesDep) -> dict[str, str | dict[str, str]]:
    checks = {}
    for name, check in CHECKS.items():
        try:
            check(services)
            checks[name] = "ok"
        except Exception as e:  # any failure means not ready; the body says which and why
            checks[name] = f"{type(e).__name__}: {e}"
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        raise NotReady(f"not reachable: {', '.join(failed)}", checks=checks)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format"}})
def metrics(registry: RegistryDep) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

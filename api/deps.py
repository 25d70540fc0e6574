"""Dependencies as `Annotated` aliases: routes take these as typed arguments, never globals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from api.errors import JobNotFound
from api.rendering import Renderer
from api.services import Services
from service import jobs, logs
from service.quotas import Quotas
from service.settings import Settings, get_settings
from service.storage import Storage

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.registry
    return registry


RegistryDep = Annotated[CollectorRegistry, Depends(get_registry)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_storage(services: ServicesDep) -> Storage:
    return services.ctx.storage


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_celery(services: ServicesDep) -> Celery:
    return services.celery


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_renderer(services: ServicesDep) -> Renderer:
    return services.renderer


RendererDep = Annotated[Renderer, Depends(get_renderer)]


def get_quotas(services: ServicesDep) -> Quotas:
    return services.quotas


QuotasDep = Annotated[Quotas, Depends(get_quotas)]

# Only documents the scheme (the padlock in /docs): api.auth checks keys before the body is read.
BEARER = HTTPBearer(auto_error=False, description="An API key made by `nexp keys create`.")


def get_owner(request: Request,
              _documented: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> str | None:
    """The request's API key id, from api.auth; None while auth is off (no keys)."""
    owner: str | None = request.state.owner  # no auth middleware: AttributeError, a 500, not open
    return owner


OwnerDep = Annotated[str | None, Depends(get_owner)]


def get_job(job_id: Annotated[str, Path(max_length=64)], session: SessionDep,
            owner: OwnerDep) -> jobs.Job:
    logs.bind_job(job_id)  # the request's log lines are about this job
    # Another key's job is "no such job" too: its existence is none of this key's business.
    job = jobs.visible(session, job_id, owner)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    # Hand the connection back now: a render or an event stream awaits for seconds to hours, and
    # requests holding pooled connections that long leave none for the rest (every request 500s).
    # The job stays readable, detached as loaded; a route that writes reopens the session.
    session.close()
    return job


JobDep = Annotated[jobs.Job, Depends(get_job)]

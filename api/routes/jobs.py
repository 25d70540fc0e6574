"""The job resource: create (upload), read, list, follow, cancel, delete."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from celery import Celery
from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from kombu.exceptions import OperationalError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import (
    CeleryDep,
    JobDep,
    OwnerDep,
    QuotasDep,
    RendererDep,
    ServicesDep,
    SessionDep,
    SettingsDep,
    StorageDep,
)
from api.errors import (
    BrokerUnavailable,
    IdempotencyKeyReused,
    JobFinished,
    NoFile,
    QueueFull,
    QuotaExceeded,
    StorageUnavailable,
    WebhookNotAllowed,
    problems,
)
from api.schemas import JobCreate, JobPublic, JobsPublic, job_public
from api.services import Services
from api.uploads import Spooled, spool, validate
from service import jobs, logs, webhooks
from service.jobs import Job, Status
from service.quotas import OverQuota, QueueTooDeep, Quotas
from service.settings import Settings
from service.storage import Storage, failure_reason, input_key, job_prefix, snapshot_prefix
from worker.celery_app import publish_fit

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_AFTER_S = 1  # Retry-After on 202: progress is written about once a second
EVENTS_POLL_S = 0.5  # how often an event stream re-reads its job


@router.post(
    "", status_code=202, responses=problems(400, 413, 415, 422, 429, 503),
    summary="Upload a signal and queue a fit",
)
def create_job(
    response: Response,
    options: Annotated[JobCreate, Form()],
    settings: SettingsDep,
    session: SessionDep,
    storage: StorageDep,
    celery: CeleryDep,
    owner: OwnerDep,
    quotas: QuotasDep,
    file: Annotated[UploadFile | None, File(
        description="The signal: an image (PNG, JPEG, WebP), audio (WAV, FLAC, OGG) or a 3D "
                    "shape. Its kind is detected from the content.")] = None,
    idempotency_key: Annotated[str | None, Header(
        max_length=255, description="Retrying with the same key and the same request returns "
                                    "the job the first try created instead of a second one.")] = None,
) -> JobPublic:
    if file is None:
        raise NoFile("send the signal as the multipart form field `file`")
    upload = spool(file, settings.scratch_dir)
    try:
        fingerprint = upload.fingerprint(options)
        stored_key = scoped(idempotency_key, owner)
        job = jobs.by_idempotency_key(session, stored_key) if stored_key else None
        if job is None:  # a replay costs no quota: its job exists already
            check_webhook(options, settings)
            admit(quotas, session, owner, upload)
            kind, suffix = validate(upload, options, settings)
            job = submit(upload, kind, suffix, options, stored_key, fingerprint, owner, session,
                         storage, celery)
    finally:
        upload.remove()
    if job.request_hash != fingerprint:
        raise IdempotencyKeyReused(f"Idempotency-Key {idempotency_key!r} was used for a "
                                   "different upload or options")
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    response.headers["Retry-After"] = str(POLL_AFTER_S)
    return job_public(job)


def check_webhook(options: JobCreate, settings: Settings) -> None:
    """Refuse a webhook the service could not sign or may not send to, before anything is kept."""
    if options.webhook is None:
        return
    if not settings.webhook_secret:
        raise WebhookNotAllowed("this service sends no webhooks: it has no NEXP_WEBHOOK_SECRET")
    try:
        webhooks.resolve(options.webhook, settings.webhook_allow_private)
    except webhooks.WebhookNotAllowed as e:
        raise WebhookNotAllowed(str(e)) from e


def scoped(idempotency_key: str | None, owner: str | None) -> str | None:
    """The key as stored: each API key has keys of its own, so two clients choosing the same one
    never see each other's job. Hashed to fit the column whatever the client sent."""
    if idempotency_key is None or owner is None:
        return idempotency_key
    return f"{owner}/{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def admit(quotas: Quotas, session: Session, owner: str | None, upload: Spooled) -> None:
    """Refuse the job before anything is stored: 503 when the queue is full, 429 over a quota."""
    try:
        quotas.admit(session, owner, upload.path.stat().st_size)
    except QueueTooDeep as e:
        raise QueueFull(str(e), headers={"Retry-After": str(e.retry_after_s)}) from e
    except OverQuota as e:
        raise QuotaExceeded(e.detail, headers={"Retry-After": str(e.retry_after_s)},
                            quota=e.quota, limit=e.limit) from e
    except ConnectionError as e:  # the quota counters live beside the broker, in Redis
        raise BrokerUnavailable(f"{e}; nothing was kept, try again later",
                                headers={"Retry-After": "30"}) from e


def submit(upload: Spooled, kind: str, suffix: str, options: JobCreate, idempotency_key: str | None,
           fingerprint: str, owner: str | None, session: Session, storage: Storage,
           celery: Celery) -> Job:
    """Store the input, record the job, queue it: all three, or (on a failure) none."""
    job_id = jobs.new_job_id()
    logs.bind_job(job_id)
    job = Job(id=job_id, kind=kind, status=Status.QUEUED, filename=upload.filename,
              input_key=input_key(job_id, suffix), options=options.model_dump(),
              idempotency_key=idempotency_key, request_hash=fingerprint, owner=owner,
              stored_bytes=upload.path.stat().st_size)
    try:
        with upload.path.open("rb") as f:
            storage.put(job.input_key, f)
    except Exception as e:  # each store raises its own errors (OSError, botocore's, boto3's)
        storage.delete(job_prefix(job_id))  # the job's folder, had the store made one
        raise StorageUnavailable(f"the artifact store did not take the upload ({failure_reason(e)}); "
                                 "nothing was kept, try again later",
                                 headers={"Retry-After": "30"}) from e
    try:
        jobs.add(session, job)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key created its job first.
        session.rollback()
        storage.delete(job_prefix(job_id))
        earlier = jobs.by_idempotency_key(session, idempotency_key) if idempotency_key else None
        if earlier is None:
            raise
        return earlier
    try:
        publish_fit(celery, job_id)
    except Exception as e:
        jobs.delete(session, job_id)
        storage.delete(job_prefix(job_id))
        if isinstance(e, OperationalError | OSError):
            raise BrokerUnavailable(f"the job queue did not accept the job ({e}); nothing was "
                                    "kept, try again later", headers={"Retry-After": "30"}) from e
        raise
    return job


@router.get("", responses=problems(422), summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobsPublic:
    rows, total = jobs.page(session, status, limit, offset, owner)
    # No curves: a page of jobs is polled every few seconds, and only an opened job draws one.
    return JobsPublic(items=[job_public(j, with_history=False) for j in rows], total=total,
                      limit=limit, offset=offset)


@router.get("/{job_id}", responses=problems(404, 422), summary="A job's status, progress and results")
def read_job(job: JobDep) -> JobPublic:
    return job_public(job)


@router.post("/{job_id}/cancel", status_code=202, responses=problems(404, 409, 422),
             summary="Cancel a queued or running job")
def cancel_job(job: JobDep, session: SessionDep, storage: StorageDep) -> JobPublic:
    """A queued job is canceled at once; a running one stops within seconds."""
    if job.status in (Status.SUCCEEDED, Status.FAILED):
        raise JobFinished(f"job {job.id} has already {job.status}")
    jobs.request_cancel(session, job.id)
    canceled = jobs.get(session, job.id) or job
    if canceled.status == Status.CANCELED and canceled.snapshot_bytes:  # left by a lost worker
        storage.delete(snapshot_prefix(job.id))
        jobs.set_snapshot_bytes(session, job.id, 0)
    return job_public(canceled)


@router.delete("/{job_id}", status_code=204, responses=problems(404, 422),
               summary="Delete a job and its artifacts (a running job is canceled first)")
def delete_job(job: JobDep, session: SessionDep, storage: StorageDep,
               renderer: RendererDep) -> Response:
    jobs.request_cancel(session, job.id)
    jobs.delete(session, job.id)
    storage.delete(job_prefix(job.id))
    renderer.forget(job.id)
    return Response(status_code=204)


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=problems(404, 422),
            summary="Server-sent events: `progress` while it trains, `status` on each change")
async def job_events(job: JobDep, services: ServicesDep) -> AsyncIterator[ServerSentEvent]:
    """`progress` events carry the progress object, `status` events the whole job: on each
    change of status, of stage, and of snapshot (a newer preview to fetch). The stream ends
    after the final status, so a client need not poll."""
    last: JobPublic | None = None
    while True:
        current = await run_in_threadpool(read_public, services, job.id, job.owner)
        if current is None:
            return  # deleted meanwhile
        if current.progress is not None and (last is None or current.progress != last.progress):
            yield ServerSentEvent(event="progress", data=current.progress)
        if last is None or milestone(current) != milestone(last):
            yield ServerSentEvent(event="status", data=current)
        if current.status in jobs.TERMINAL:
            return
        last = current
        await asyncio.sleep(EVENTS_POLL_S)


def milestone(job: JobPublic) -> tuple[str, int, int | None]:
    """What a follower of the job is told of with a `status` event when it changes."""
    return job.status, len(job.stages), job.snapshot_step


def read_public(services: Services, job_id: str, owner: str | None) -> JobPublic | None:
    with services.ctx.sessions() as session:
        job = jobs.visible(session, job_id, owner)
        return None if job is None else job_public(job)

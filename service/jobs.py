"""Job records: the table and the few reads and writes the API and the worker make on it.

The job's state lives here, not in Celery's result backend, which reports PENDING for any id it
has never seen. Writes that race (a worker finishing while a user cancels, two deliveries of one
job) are conditional UPDATEs, so the first writer wins and the other sees it lost.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DELETING = "deleting"
    """Expired, its artifacts being removed (service.retention): hidden from every API read."""


FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
# Deleting is terminal too: no worker may start or finish such a job.
TERMINAL = FINISHED | {Status.DELETING}
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    input_key: Mapped[str] = mapped_column(String(255))
    options: Mapped[dict[str, Any]]
    """The fit options as asked (preset, steps, lr, model, experts, activation, seed, protocol)."""
    progress: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    """{code, title, detail} of a failed job."""
    attempts: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(255))
    """host:pid of the process running the current attempt."""
    heartbeat_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    """The API key (service.keys) that created the job; None when auth is off."""
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Bytes of its artifacts (input, then checkpoint), for the stored-bytes quota."""
    snapshot_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Bytes of its running fit's latest snapshot (0 once it is removed), counted in the quota."""
    resumed_from_step: Mapped[int | None]
    """The snapshot step the latest attempt resumed from; None when no attempt resumed."""
    snapshot_step: Mapped[int | None]
    """The step of the running fit's latest stored snapshot, the one previews come from; None
    before the first and once it is removed."""
    history: Mapped[dict[str, Any] | None]
    """The fit's loss and metric at evenly spaced steps, thinned to a few hundred points
    (worker.timeline.Curve): curves drawn after a reload or for a finished job."""
    stages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """[{name, started_at, ended_at}] of pretrain, fit and evaluate, as far as the fit got."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Loaded with the job (selectin): routes read jobs detached from their session (api.deps).
    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        lazy="selectin", order_by="WebhookDelivery.created_at", viewonly=True)


class Delivery(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: refused or unanswered for NEXP_WEBHOOK_RETRY_FOR_S."""


WEBHOOK_EVENTS = ("start", "progress", "completed")


class WebhookDelivery(Base):
    """A webhook event a job's receiver is owed, and how sending it went (service.webhooks).

    Written in the same transaction as the change it reports, so a crash never loses one; the
    API processes send them (api.webhooks), so a slow receiver never holds up a fit.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """The Standard Webhooks message id (`webhook-id`), the same on every retry."""
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=Delivery.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    body: Mapped[str | None] = mapped_column(Text)
    """The job as first sent: every retry sends the same bytes."""
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None]
    """An API process is sending it until then; past it, another may."""
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


def new_job_id() -> str:
    return uuid.uuid4().hex


def add(session: Session, job: Job) -> Job:
    """Insert a queued job. Raises IntegrityError when its idempotency key is taken."""
    session.add(job)
    session.commit()
    return job


def get(session: Session, job_id: str) -> Job | None:
    # populate_existing: conditional UPDATEs below bypass the identity map.
    return session.get(Job, job_id, populate_existing=True)


def by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def owned_by(owner: str | None) -> ColumnElement[bool]:
    """The jobs of one API key; None is the anonymous owner of jobs made while auth is off."""
    return Job.owner.is_(None) if owner is None else Job.owner == owner


def visible(session: Session, job_id: str, owner: str | None) -> Job | None:
    """The job as its owner may see it: another key's job, or one being deleted, is None."""
    return session.scalar(
        select(Job).where(Job.id == job_id, owned_by(owner), Job.status != Status.DELETING)
        .execution_options(populate_existing=True)
    )


def page(session: Session, status: str | None, limit: int, offset: int,
         owner: str | None = None) -> tuple[list[Job], int]:
    """`owner`'s jobs, newest first, with the total count under the same filter."""
    where = [owned_by(owner), Job.status != Status.DELETING]
    if status is not None:
        where.append(Job.status == status)
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = session.scalars(
        select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
        .limit(limit).offset(offset)
    )
    return list(rows), total


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: count for status, count in rows.tuples()}


def queued(session: Session) -> int:
    """Jobs waiting for a worker, of every owner: the queue's depth, whatever the broker."""
    return session.scalar(select(func.count()).where(Job.status == Status.QUEUED)) or 0


def queued_before(session: Session, before: datetime) -> list[str]:
    """Ids of the jobs queued, and unchanged, since before `before`: oldest first."""
    return list(session.scalars(select(Job.id).where(Job.status == Status.QUEUED, Job.updated_at < before)
                                .order_by(Job.updated_at)))


def active(session: Session, owner: str | None) -> int:
    """`owner`'s jobs queued or running."""
    return session.scalar(select(func.count()).where(owned_by(owner), Job.status.in_(ACTIVE))) or 0


def stored_bytes(session: Session, owner: str | None) -> int:
    """Bytes `owner`'s jobs keep in storage, the expiring ones included until they are gone."""
    total = select(func.coalesce(func.sum(Job.stored_bytes + Job.snapshot_bytes), 0)).where(owned_by(owner))
    return session.scalar(total) or 0


def add_stored_bytes(session: Session, job_id: str, size: int) -> None:
    session.execute(update(Job).where(Job.id == job_id)
                    .values(stored_bytes=Job.stored_bytes + size)
                    .execution_options(synchronize_session=False))
    session.commit()


def set_snapshot_bytes(session: Session, job_id: str, size: int, step: int | None = None) -> None:
    """The size and step of the job's snapshot now (it replaces the previous one; 0 and None
    once removed)."""
    session.execute(update(Job).where(Job.id == job_id).values(snapshot_bytes=size, snapshot_step=step)
                    .execution_options(synchronize_session=False))
    session.commit()


def mark_resumed(session: Session, job_id: str, step: int) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(resumed_from_step=step)
                    .execution_options(synchronize_session=False))
    session.commit()


def mark_deleting(session: Session, finished_before: datetime) -> None:
    """Hide every job that finished before the cutoff, in one transaction (service.retention)."""
    session.execute(update(Job).where(Job.status.in_(FINISHED), Job.finished_at < finished_before)
                    .values(status=Status.DELETING, updated_at=utcnow())
                    .execution_options(synchronize_session=False))
    session.commit()


def deleting(session: Session) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status == Status.DELETING)))


def delete(session: Session, job_id: str) -> None:
    session.query(WebhookDelivery).filter(WebhookDelivery.job_id == job_id).delete()
    session.query(Job).filter(Job.id == job_id).delete()
    session.commit()


def _update(session: Session, job_id: str, *where: ColumnElement[bool],
            webhook_event: str | None = None, **values: Any) -> bool:
    """UPDATE one job if it still matches `where`; True when it did. A change that is a webhook
    event owes the job's receiver a delivery, recorded in the same transaction."""
    result = session.execute(
        update(Job).where(Job.id == job_id, *where).values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    if changed and webhook_event is not None:
        owe_webhook(session, job_id, webhook_event)
    session.commit()
    return changed


def owe_webhook(session: Session, job_id: str, event: str) -> None:
    """Record a delivery of `event` if the job's webhook asked for it (uncommitted)."""
    options = session.scalar(select(Job.options).where(Job.id == job_id)) or {}
    if not options.get("webhook") or event not in options.get("webhook_events", ()):
        return
    if event == "progress" and session.scalar(select(WebhookDelivery.id).where(
            WebhookDelivery.job_id == job_id, WebhookDelivery.event == event,
            WebhookDelivery.attempts == 0, WebhookDelivery.status == Delivery.PENDING)):
        return  # the one not yet sent carries the latest progress: its body is made at sending
    session.add(WebhookDelivery(id=f"msg_{uuid.uuid4().hex}", job_id=job_id, event=event))


def start_attempt(session: Session, job_id: str, worker: str, attempts_seen: int) -> bool:
    """Count one more attempt, run by `worker`; False if the row changed since it was read."""
    now = utcnow()
    return _update(
        session, job_id, Job.attempts == attempts_seen,
        Job.status.in_([Status.QUEUED, Status.RUNNING]),
        webhook_event="start" if attempts_seen == 0 else None,  # a redelivery is no new start
        status=Status.RUNNING, attempts=attempts_seen + 1, worker=worker, heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now),
    )


def beat(
    session: Session, job_id: str, worker: str, progress: dict[str, Any] | None,
    progress_event: bool = False, **tracked: Any,
) -> bool | None:
    """A running attempt's heartbeat (and progress, announced to its webhook when
    `progress_event`, with the `tracked` columns that go with it: history, stages): its cancel
    flag, None if no longer its job."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values.update(progress=progress, **tracked)
    event = "progress" if progress is not None and progress_event else None
    if not _update(session, job_id, Job.worker == worker, Job.status == Status.RUNNING,
                   webhook_event=event, **values):
        return None
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish(session: Session, job_id: str, status: Status, worker: str | None = None,
           **values: Any) -> bool:
    """Move a job to a terminal status, unless it has one (or `worker` no longer runs it)."""
    assert status in TERMINAL, f"{status} is not a terminal status"
    where: list[ColumnElement[bool]] = [Job.status.not_in(TERMINAL)]
    if worker is not None:
        where.append(Job.worker == worker)
    return _update(session, job_id, *where, webhook_event="completed", status=status,
                   finished_at=utcnow(), **values)


def request_cancel(session: Session, job_id: str) -> None:
    """A queued job is canceled at once; a running one is flagged for its worker to stop."""
    now = utcnow()
    if not _update(session, job_id, Job.status == Status.QUEUED, webhook_event="completed",
                   status=Status.CANCELED, finished_at=now, cancel_requested=True):
        _update(session, job_id, Job.status == Status.RUNNING, cancel_requested=True)


def running(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == Status.RUNNING)))


def requeue(session: Session, job_id: str, worker: str | None, attempts: int) -> bool:
    """Back to queued, if the attempt `attempts` by `worker` is still the one recorded."""
    return _update(
        session, job_id, Job.status == Status.RUNNING, Job.worker == worker,
        Job.attempts == attempts, status=Status.QUEUED, worker=None,
    )


def attempt_alive(job: Job, stale_after_s: float) -> bool:
    """Whether the attempt recorded on a running job may still be running."""
    silent = timedelta(seconds=stale_after_s)
    if job.heartbeat_at is None or utcnow() - job.heartbeat_at > silent:
        return False
    host, _, pid = (job.worker or "").rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's process: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's
    return True


def worker_lost(attempts: int) -> dict[str, str]:
    return {
        "code": "worker_lost",
        "title": "The worker running this job died",
        "detail": f"the worker process died during each of {attempts} attempts (killed, for "
                  "example out of memory); the job is not retried again",
    }

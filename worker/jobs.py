"""Job records: the table and the few reads and writes the API and the worker make on it.

The job's state lives here, not in Celery's result backend, which reports PENDING for any id it
has never seen. Writes that race (a worker finishing while a user cancels, two deliveries of one
job) are conditional UPDATEs, so the first writer wins and the other sees it lost.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ColumnElement, DateTime, Dialect, String, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DELETING = "deleting"
    """Expired, its artifacts being removed (worker.retention): hidden from every API read."""


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
    """The API key (worker.keys) that created the job; None when auth is off."""
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Bytes of its artifacts (input, then checkpoint), for the stored-bytes quota."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


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
    total = select(func.coalesce(func.sum(Job.stored_bytes), 0)).where(owned_by(owner))
    return session.scalar(total) or 0


def add_stored_bytes(session: Session, job_id: str, size: int) -> None:
    session.execute(update(Job).where(Job.id == job_id)
                    .values(stored_bytes=Job.stored_bytes + size)
                    .execution_options(synchronize_session=False))
    session.commit()


def mark_deleting(session: Session, finished_before: datetime) -> None:
    """Hide every job that finished before the cutoff, in one transaction (worker.retention)."""
    session.execute(update(Job).where(Job.status.in_(FINISHED), Job.finished_at < finished_before)
                    .values(status=Status.DELETING, updated_at=utcnow())
                    .execution_options(synchronize_session=False))
    session.commit()


def deleting(session: Session) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status == Status.DELETING)))


def delete(session: Session, job_id: str) -> None:
    session.query(Job).filter(Job.id == job_id).delete()
    session.commit()


def _update(session: Session, job_id: str, *where: ColumnElement[bool], **values: Any) -> bool:
    """UPDATE one job if it still matches `where`; True when it did."""
    result = session.execute(
        update(Job).where(Job.id == job_id, *where).values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def start_attempt(session: Session, job_id: str, worker: str, attempts_seen: int) -> bool:
    """Count one more attempt, run by `worker`; False if the row changed since it was read."""
    now = utcnow()
    return _update(
        session, job_id, Job.attempts == attempts_seen,
        Job.status.in_([Status.QUEUED, Status.RUNNING]),
        status=Status.RUNNING, attempts=attempts_seen + 1, worker=worker, heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now),
    )


def beat(
    session: Session, job_id: str, worker: str, progress: dict[str, Any] | None
) -> bool | None:
    """A running attempt's heartbeat (and progress): its cancel flag, None if no longer its job."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if not _update(session, job_id, Job.worker == worker, Job.status == Status.RUNNING, **values):
        return None
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish(session: Session, job_id: str, status: Status, worker: str | None = None,
           **values: Any) -> bool:
    """Move a job to a terminal status, unless it has one (or `worker` no longer runs it)."""
    assert status in TERMINAL, f"{status} is not a terminal status"
    where = [Job.status.not_in(TERMINAL)]
    if worker is not None:
        where.append(Job.worker == worker)
    return _update(session, job_id, *where, status=status, finished_at=utcnow(), **values)


def request_cancel(session: Session, job_id: str) -> None:
    """A queued job is canceled at once; a running one is flagged for its worker to stop."""
    now = utcnow()
    if not _update(session, job_id, Job.status == Status.QUEUED, status=Status.CANCELED,
                   finished_at=now, cancel_requested=True):
        _update(session, job_id, Job.status == Status.RUNNING, cancel_requested=True)


def running(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == Status.RUNNING)))


def requeue(session: Session, job_id: str, worker: str | None, attempts: int) -> bool:
    """Back to queued, if the attempt `attempts` by `worker` is still the one recorded."""
    return _update(
        session, job_id, Job.status == Status.RUNNING, Job.worker == worker,
        Job.attempts == attempts, status=Status.QUEUED, worker=None,
    )

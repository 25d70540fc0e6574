"""Admission control and per-key quotas, checked before a new job is created.

Every API replica must see the same counts, so nothing is kept in process memory: jobs at once
and stored bytes are counted from the job records, the queue's depth too (queued rows, whatever
the broker), and uploads per minute are fixed-window counters in Redis (INCR + EXPIRE) when the
broker is Redis, or in the database in embedded mode.

The checks run before the job row is written, so two requests of one key racing for its last
slot can both pass: the jobs-at-once cap can be exceeded by the number of requests in flight,
which the uploads-per-minute cap bounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import redis
from sqlalchemy import BigInteger, String, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service import jobs
from service.jobs import Base
from service.settings import Settings

MINUTE_S = 60
ANONYMOUS = "-"  # the bucket of requests made while auth is off
QUOTA_RETRY_S = 30  # jobs at once and stored bytes free up when jobs end or are deleted: no ETA
QUEUE_RETRY_S = 30  # a full queue drains at the workers' pace: a hint, not a promise
REDIS_TIMEOUT_S = 3.0  # the same budget as publishing a job (worker.celery_app)


class OverQuota(Exception):
    def __init__(self, quota: str, limit: int, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.quota, self.limit, self.detail, self.retry_after_s = quota, limit, detail, retry_after_s


class QueueTooDeep(Exception):
    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"{depth} jobs are waiting for a worker, the most this service queues "
                         f"(NEXP_MAX_QUEUE_DEPTH={limit}); nothing was kept, try again later")
        self.retry_after_s = QUEUE_RETRY_S


class Windows(Protocol):
    """Fixed-window event counters that every API replica shares."""

    def hit(self, name: str, window_s: int) -> tuple[int, int]:
        """Count one event under `name`: (events in the current window, seconds until it ends).

        Raises ConnectionError when the store is not reachable."""
        ...

    def close(self) -> None: ...


def window_of(now: float, window_s: int) -> tuple[int, int]:
    """The current window's number and the whole seconds left in it (at least 1)."""
    number = int(now // window_s)
    return number, max(1, math.ceil((number + 1) * window_s - now))


class RedisWindows:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def hit(self, name: str, window_s: int) -> tuple[int, int]:
        number, left = window_of(time.time(), window_s)
        key = f"{self.prefix}:{name}:{number}"
        try:
            pipe = self.client.pipeline()  # MULTI/EXEC: never a counter without its expiry
            pipe.incr(key)
            pipe.expire(key, left + 1)
            count, _ = pipe.execute()
        except redis.RedisError as e:
            raise ConnectionError(f"the quota counters in Redis are not reachable ({e})") from e
        return int(count), left

    def close(self) -> None:
        self.client.close()


class Window(Base):
    """One counter per name: the current window's number and its count (embedded mode)."""

    __tablename__ = "quota_windows"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int]


class DatabaseWindows:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def hit(self, name: str, window_s: int) -> tuple[int, int]:
        number, left = window_of(time.time(), window_s)
        with self.sessions() as session:
            if not self._increment(session, name, number):
                try:
                    session.add(Window(name=name, window=number, count=1))
                    session.flush()
                except IntegrityError:  # another request made the row first: count on it
                    session.rollback()
                    self._increment(session, name, number)
            # Read in the transaction that wrote: the row lock orders concurrent hits.
            count = session.scalar(select(Window.count).where(Window.name == name)) or 0
            session.commit()
        return count, left

    @staticmethod
    def _increment(session: Session, name: str, number: int) -> bool:
        """+1 in this window, or restart at 1 in a new one; False when there is no row yet."""
        result = session.execute(
            update(Window).where(Window.name == name)
            .values(count=case((Window.window == number, Window.count + 1), else_=1), window=number)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Nothing to close: the sessions belong to the process's Context."""


def make_windows(settings: Settings,
                 sessions: sessionmaker[Session]) -> RedisWindows | DatabaseWindows:
    """Redis beside a Redis broker (shared by every replica); the job database otherwise."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                      socket_timeout=REDIS_TIMEOUT_S)
        # Named after the service's queue: services sharing one Redis keep separate counts.
        return RedisWindows(client, f"nexp:quota:{settings.queue}")
    return DatabaseWindows(sessions)


@dataclass(frozen=True)
class Quotas:
    settings: Settings
    windows: Windows

    def admit(self, session: Session, owner: str | None, upload_bytes: int) -> None:
        """Raise QueueTooDeep or OverQuota if a new job of `owner` must not be created now.

        Uploads are counted last, so a request refused for another reason costs no upload."""
        self.check_queue(session)
        self.check_active(session, owner)
        self.check_stored(session, owner, upload_bytes)
        self.count_upload(owner)

    def check_queue(self, session: Session) -> None:
        limit = self.settings.max_queue_depth
        if limit and (depth := jobs.queued(session)) >= limit:
            raise QueueTooDeep(depth, limit)

    def check_active(self, session: Session, owner: str | None) -> None:
        limit = self.settings.quota_active_jobs
        if limit and jobs.active(session, owner) >= limit:
            raise OverQuota("active_jobs", limit, f"this key has {limit} jobs queued or running, "
                            f"its cap (NEXP_QUOTA_ACTIVE_JOBS); wait for one to end or cancel one",
                            QUOTA_RETRY_S)

    def check_stored(self, session: Session, owner: str | None, upload_bytes: int) -> None:
        limit = self.settings.quota_stored_bytes
        if limit and (stored := jobs.stored_bytes(session, owner)) + upload_bytes > limit:
            raise OverQuota("stored_bytes", limit, f"this key stores {stored:,} bytes; "
                            f"{upload_bytes:,} more would pass its cap of {limit:,} "
                            "(NEXP_QUOTA_STORED_BYTES); delete finished jobs to make room",
                            QUOTA_RETRY_S)

    def count_upload(self, owner: str | None) -> None:
        limit = self.settings.quota_uploads_per_minute
        if not limit:
            return
        count, left = self.windows.hit(f"uploads:{owner or ANONYMOUS}", MINUTE_S)
        if count > limit:
            raise OverQuota("uploads_per_minute", limit, f"this key has sent {limit} uploads "
                            f"this minute, its cap (NEXP_QUOTA_UPLOADS_PER_MINUTE)", left)

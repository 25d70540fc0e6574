"""One delivery of a fit job: claim it, fit it, store the checkpoint, record the outcome.

The Celery task is a thin wrapper around `run_job`; everything here is plain Python, so it is
tested without a broker. A delivery is safe to repeat: a finished job is left alone, a job
whose previous attempt is still alive is retried later, and the attempt cap fails a job whose
workers keep dying (an input that OOM-kills every worker must not loop forever).
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from model.checkpoint import CONFIG, METRICS, WEIGHTS, finite, save_checkpoint
from model.fit import FitCanceled, FitDiverged, FitOptions, Progress, fit, resolve_device
from model.signals import SignalError, kinds
from model.snapshot import FitSnapshot
from service import jobs
from service.context import Context
from service.db import unavailable
from service.jobs import Job, Status
from service.retention import discard_snapshot
from service.settings import Settings
from service.storage import (
    ArtifactNotFound,
    checkpoint_key,
    checkpoint_prefix,
    failure_reason,
    job_prefix,
    snapshot_key,
)
from worker.timeline import Timeline

log = logging.getLogger(__name__)

FIT_OPTION_NAMES = frozenset(f.name for f in fields(FitOptions))
# A database restart or fail-over takes seconds to a minute: a finished fit waits this long to
# record its outcome. Past it the task redelivers the job (worker.tasks), which fits it again.
OUTCOME_RETRY_S = 300.0
OUTCOME_RETRY_EVERY_S = 1.0
PROGRESS_EVENT_EVERY_S = 1.0  # the issue: a webhook gets at most one progress event a second

T = TypeVar("T")


class StorageFailed(Exception):
    """The artifact store did not take the checkpoint (full, read-only, unreachable)."""


class Busy(Exception):
    """Another attempt of this job is still alive; deliver this one again later."""

    def __init__(self, job_id: str, retry_in_s: float) -> None:
        super().__init__(f"job {job_id} is running elsewhere")
        self.retry_in_s = retry_in_s


def worker_id() -> str:
    """host:pid of this process (a pool child has its own pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: str, ctx: Context) -> None:
    me = worker_id()
    with ctx.sessions() as session:
        job = claim(session, job_id, me, ctx)
    if job is None:
        return
    log.info("job %s: attempt %d of %d on %s", job.id, job.attempts, ctx.settings.max_attempts, me)
    watchdog = Watchdog(job.id, me, ctx)
    watchdog.start()
    outcome: dict[str, Any]
    try:
        outcome = {"status": Status.SUCCEEDED, "metrics": finite(fit_and_store(job, ctx, watchdog))}
    except FitCanceled:
        outcome = {"status": Status.CANCELED}
    except Exception as e:  # every failure becomes a job error; none leaves the job running
        ctx.storage.delete(checkpoint_prefix(job.id))  # no partial checkpoint stays
        outcome = {"status": Status.FAILED, "error": job_error(e)}
        log.log(logging.ERROR if outcome["error"]["code"] == "internal" else logging.INFO,
                "job %s failed", job.id, exc_info=e)
    finally:
        watchdog.stop()
    watchdog.timeline.finish()
    finished = when_reachable(ctx, lambda session: jobs.finish(
        session, job.id, worker=me, progress=watchdog.latest, **watchdog.timeline.columns(),
        **outcome))
    discard_snapshot(ctx, job.id)  # the job ended: nothing will resume from it
    with ctx.sessions() as session:
        if not finished and jobs.get(session, job.id) is None:
            ctx.storage.delete(job_prefix(job.id))  # deleted while it ran: leave nothing behind


def when_reachable(ctx: Context, write: Callable[[Session], T]) -> T:
    """`write` in a session of its own, tried again while the database is away (for up to
    OUTCOME_RETRY_S): a fit that ended during a database restart keeps its result."""
    deadline = time.monotonic() + OUTCOME_RETRY_S
    while True:
        try:
            with ctx.sessions() as session:
                return write(session)
        except SQLAlchemyError as e:
            if not unavailable(e) or time.monotonic() > deadline:
                raise
            log.warning("the database is away (%s); writing again in %g s",
                        str(e).splitlines()[0], OUTCOME_RETRY_EVERY_S)
        time.sleep(OUTCOME_RETRY_EVERY_S)


def claim(session: Session, job_id: str, me: str, ctx: Context) -> Job | None:
    """The job, now counted as running attempt by `me`; None when there is nothing to run."""
    settings = ctx.settings
    job = jobs.get(session, job_id)
    if job is None or job.status in jobs.TERMINAL:
        return None
    if job.cancel_requested:
        jobs.finish(session, job_id, Status.CANCELED)
        discard_snapshot(ctx, job_id)
        return None
    if job.status == Status.RUNNING and jobs.attempt_alive(job, settings.stale_after_s):
        raise Busy(job_id, settings.stale_after_s)
    if job.attempts >= settings.max_attempts:
        jobs.finish(session, job_id, Status.FAILED, error=jobs.worker_lost(job.attempts))
        discard_snapshot(ctx, job_id)
        return None
    if not jobs.start_attempt(session, job_id, me, job.attempts):
        raise Busy(job_id, settings.heartbeat_s)  # another delivery claimed it just now
    return jobs.get(session, job_id)


def fit_and_store(job: Job, ctx: Context, watchdog: Watchdog) -> dict[str, float | str]:
    settings = ctx.settings
    device = str(resolve_device(settings.device))
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.scratch_dir) as tmp:
        folder = Path(tmp)
        path = folder / f"input{Path(job.input_key).suffix}"
        with ctx.storage.open(job.input_key) as src, path.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        # The API validated the upload already; loading again with the caps re-checks it here.
        signal = kinds()[job.kind].load(
            path, protocol=job.options.get("protocol"), device=device,
            **settings.loader_options(job.kind),
        )
        options = {k: v for k, v in job.options.items() if k in FIT_OPTION_NAMES}
        resume = last_snapshot(ctx, job.id)
        if resume is not None:
            step = resume.step
            log.info("job %s: resuming from its snapshot at step %d", job.id, step)
            when_reachable(ctx, lambda session: jobs.mark_resumed(session, job.id, step))
            watchdog.timeline = Timeline.resumed(job.history, job.stages, step)
        result = fit(
            signal, FitOptions(**default_budget(options, settings), device=device),
            on_progress=watchdog.report, should_stop=watchdog.canceled.is_set,
            cache_dir=settings.pretrain_cache_dir, on_snapshot=SnapshotWriter(job.id, ctx),
            snapshot_every_s=settings.snapshot_every_s, resume=resume,
        )
        save_checkpoint(folder / "model", result.model, result.config, result.record)
        for name in (CONFIG, METRICS, WEIGHTS):  # weights last: their presence marks a whole set
            with (folder / "model" / name).open("rb") as f, storing(name):
                ctx.storage.put(checkpoint_key(job.id, name), f)
        checkpoint_bytes = sum((folder / "model" / name).stat().st_size
                               for name in (CONFIG, METRICS, WEIGHTS))
    log.info("job %s: checkpoint stored", job.id)  # bench.faults counts these: never twice a job
    # The stored-bytes quota (service.quotas) counts it from now.
    when_reachable(ctx, lambda session: jobs.add_stored_bytes(session, job.id, checkpoint_bytes))
    return result.record


def last_snapshot(ctx: Context, job_id: str) -> FitSnapshot | None:
    """The snapshot an earlier attempt left, if any and readable; None means start over."""
    if ctx.settings.snapshot_every_s <= 0:
        return None
    try:
        return FitSnapshot.from_bytes(ctx.storage.get(snapshot_key(job_id)))
    except ArtifactNotFound:
        return None
    except Exception:  # an unreadable snapshot costs the steps it held, not the job
        log.warning("job %s: its snapshot could not be read; starting over", job_id, exc_info=True)
        return None


class SnapshotWriter:
    """Stores each snapshot the fit takes in place of the previous one (one object, put all or
    nothing), and records its size for the stored-bytes quota."""

    def __init__(self, job_id: str, ctx: Context) -> None:
        self.job_id, self.ctx = job_id, ctx

    def __call__(self, snapshot: FitSnapshot) -> None:
        data = snapshot.to_bytes()
        try:
            self.ctx.storage.put(snapshot_key(self.job_id), data)
            with self.ctx.sessions() as session:
                jobs.set_snapshot_bytes(session, self.job_id, len(data), snapshot.step)
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # a missed snapshot only means more steps to redo: keep training
            log.warning("job %s: snapshot at step %d not stored", self.job_id, snapshot.step,
                        exc_info=True)


def default_budget(options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A job that asks for neither steps nor a budget gets this worker's default budget."""
    unbounded = options.get("steps") is None and options.get("time_budget_s") is None
    if unbounded and settings.default_time_budget_s > 0:
        return {**options, "time_budget_s": settings.default_time_budget_s}
    return options


@contextmanager
def storing(name: str) -> Iterator[None]:
    """A failed write to the store becomes StorageFailed, whatever the backend raised (OSError
    from a folder, botocore's and boto3's errors from S3)."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise  # the time limit struck while writing: not the store's fault
    except Exception as e:
        raise StorageFailed(f"{name} could not be stored: {failure_reason(e)}") from e


ERRORS: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str, str]] = [
    (SignalError, "invalid_signal", "The input is not a usable signal"),
    (FitDiverged, "diverged", "Training diverged"),
    (StorageFailed, "storage_error", "The artifact store did not take the results"),
    (ValueError, "invalid_options", "The fit options are invalid"),
    ((torch.OutOfMemoryError, MemoryError), "out_of_memory", "Out of memory"),
    (SoftTimeLimitExceeded, "time_limit", "The job ran past its time limit"),
]


# What the machine did to the fit rather than what the fit did: found anywhere in an error's
# chain, because wrappers re-raise them as their own (torch.compile raises a time limit that
# strikes while it traces as InternalTorchDynamoError, `from None`).
LIMITS = (SoftTimeLimitExceeded, torch.OutOfMemoryError, MemoryError)


def job_error(e: BaseException) -> dict[str, str]:
    """{code, title, detail} for the job record; the first matching row of ERRORS wins."""
    e = next((link for link in chain(e) if isinstance(link, LIMITS)), e)
    for types, code, title in ERRORS:
        if isinstance(e, types):
            return {"code": code, "title": title, "detail": str(e) or type(e).__name__}
    return {"code": "internal", "title": "Internal error",
            "detail": f"{type(e).__name__}: {e}"}


def chain(e: BaseException) -> Iterator[BaseException]:
    """`e`, then the error it was raised from or while handling, and so on."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def time_limit_error(limit_s: float) -> dict[str, str]:
    return {"code": "time_limit", "title": "The job ran past its time limit",
            "detail": f"the worker was stopped after {limit_s:g} s"}


def gpu_peak() -> dict[str, int]:
    """This process's peak GPU memory so far (a fresh child per job: the job's), kept with the
    progress for /metrics; the API's progress schema leaves it out."""
    if not torch.cuda.is_initialized():
        return {}
    return {"gpu_peak_bytes": sum(torch.cuda.max_memory_allocated(i)
                                   for i in range(torch.cuda.device_count()))}


class Watchdog:
    """A thread beside the fit: every heartbeat it writes the latest progress and reads the
    cancel flag, so the fit loop's `should_stop` is a free in-memory check.

    The fit checks the flag between steps (of pretraining and training) only; if it has not
    stopped `cancel_grace_s` after a cancel (a torch.compile or one huge step in progress), the
    job is recorded canceled and this process exits. Celery sees a lost worker and redelivers
    the message, which finds the job finished.
    """

    def __init__(self, job_id: str, worker: str, ctx: Context) -> None:
        self.job_id, self.worker, self.ctx = job_id, worker, ctx
        self.canceled = threading.Event()
        self.latest: dict[str, Any] | None = None
        self.timeline = Timeline()
        """The curve and stages so far; set before the fit starts when it resumes."""
        self._unsent: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._progress_event_at = float("-inf")
        # In a copy of the job's context, so the watchdog's log lines carry the job's ids too.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                        name=f"watchdog-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def report(self, progress: Progress) -> None:
        state = finite(asdict(progress)) | gpu_peak()
        with self._lock:
            self.timeline.add(progress)
            self.latest = self._unsent = state

    def _run(self) -> None:
        canceled_at: float | None = None
        while not self._stopped.wait(self.ctx.settings.heartbeat_s):
            if not self._beat():
                self.canceled.set()
            if self.canceled.is_set():
                canceled_at = canceled_at or time.monotonic()
                if time.monotonic() - canceled_at > self.ctx.settings.cancel_grace_s:
                    self._end_process()

    def _beat(self) -> bool:
        """False when the job should stop: a cancel, or the job is no longer this attempt's."""
        with self._lock:
            unsent, self._unsent = self._unsent, None
            tracked = self.timeline.columns() if unsent is not None else {}
        announce = unsent is not None and time.monotonic() - self._progress_event_at >= PROGRESS_EVENT_EVERY_S
        try:
            with self.ctx.sessions() as session:
                cancel = jobs.beat(session, self.job_id, self.worker, unsent,
                                   progress_event=announce, **tracked)
            if announce:
                self._progress_event_at = time.monotonic()
        except SQLAlchemyError:
            log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
            return True  # the database is away for a moment: keep training
        return cancel is False

    def _end_process(self) -> None:
        log.warning("job %s: cancel not honoured in %g s; ending the worker child", self.job_id,
                    self.ctx.settings.cancel_grace_s)
        with self.ctx.sessions() as session:
            jobs.finish(session, self.job_id, Status.CANCELED, worker=self.worker)
        discard_snapshot(self.ctx, self.job_id)
        logging.shutdown()
        os._exit(1)

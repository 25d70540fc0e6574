"""The Celery task: a thin adapter from a message to `worker.runner.run_job`."""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_postrun, task_prerun
from sqlalchemy.exc import SQLAlchemyError

from service import jobs, logs
from service.context import context
from service.db import unavailable
from worker.celery_app import FIT_TASK, REQUEST_ID_HEADER, app
from worker.runner import Busy, run_job, time_limit_error

DATABASE_RETRY_S = 5  # a database restart takes seconds: look again soon, without spinning


class FitTask(Task):
    def on_failure(self, exc: Exception, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        # Only a hard time limit gets here (run_job records every other failure). It runs in the
        # worker's parent, after the child running the job was killed without a word.
        if isinstance(exc, TimeLimitExceeded):
            ctx = context()
            with ctx.sessions() as session:
                jobs.finish(session, args[0], jobs.Status.FAILED,
                            error=time_limit_error(ctx.settings.hard_time_limit_s))


@app.task(bind=True, base=FitTask, name=FIT_TASK)
def fit_job(self: FitTask, job_id: str) -> None:
    """Fit one job (an id: the task re-reads the job row, never trusts message contents)."""
    try:
        run_job(job_id, context())
    except Busy as busy:
        raise self.retry(countdown=busy.retry_in_s, max_retries=None) from busy
    except SQLAlchemyError as e:
        # The job row could not be read or written: a failed task would be acked and a job still
        # queued never delivered again. Deliver it again once the database is back.
        if not unavailable(e):
            raise
        raise self.retry(countdown=DATABASE_RETRY_S, max_retries=None) from e


@task_prerun.connect
def _tag_logs(task: Task, args: tuple[Any, ...], **_: object) -> None:
    """From here to postrun (Celery's own "succeeded" line included), a job's lines carry its id
    and the id of the request that created it."""
    if task.name == FIT_TASK:
        logs.begin(getattr(task.request, REQUEST_ID_HEADER, None), args[0])


@task_postrun.connect
def _untag_logs(**_: object) -> None:
    logs.begin()

"""worker.tasks: what the Celery task adds around run_job."""

from __future__ import annotations

import pytest
from celery.exceptions import TimeLimitExceeded

from tests.utils.jobs import add_job
from worker import jobs, tasks
from worker.context import Context


def test_a_hard_time_limit_is_recorded_by_the_parent(ctx: Context,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The child was killed without a word: the worker's parent marks the job failed."""
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    with ctx.sessions() as session:
        job = add_job(session, status=jobs.Status.RUNNING, attempts=1, worker="vm:1")
    tasks.fit_job.on_failure(TimeLimitExceeded(7), "task-id", (job.id,), {}, None)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == jobs.Status.FAILED
    assert row.error is not None and row.error["code"] == "time_limit"

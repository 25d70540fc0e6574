"""worker.tasks: what the Celery task adds around run_job."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import Retry, TimeLimitExceeded

from service import jobs
from service.context import Context
from service.settings import Settings
from tests.utils.jobs import add_job
from worker import tasks


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


def test_a_delivery_that_finds_the_database_away_is_delivered_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that raised would be acked, and a job still queued never run: it retries."""
    # A folder where the database file should be: SQLite cannot open it (OperationalError).
    away = Context.build(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}"))
    monkeypatch.setattr(tasks, "context", lambda: away)
    try:
        with pytest.raises(Retry):
            tasks.fit_job(jobs.new_job_id())
    finally:
        away.engine.dispose()

"""service.jobs: conditional writes decide every race between the API and the workers."""

from __future__ import annotations

from sqlalchemy import select

from service import jobs, webhooks
from service.context import Context
from service.jobs import Status
from tests.utils.jobs import add_job


def test_a_page_is_newest_first_and_filtered(ctx: Context) -> None:
    with ctx.sessions() as session:
        ids = [add_job(session).id for _ in range(3)]
        add_job(session, status=Status.FAILED)
        rows, total = jobs.page(session, Status.QUEUED, limit=2, offset=0)
        assert total == 3 and [r.id for r in rows] == ids[::-1][:2]
        rows, _ = jobs.page(session, Status.QUEUED, limit=2, offset=2)
        assert [r.id for r in rows] == [ids[0]]
        assert jobs.count_by_status(session) == {"queued": 3, "failed": 1}


def test_one_attempt_owns_a_running_job(ctx: Context) -> None:
    with ctx.sessions() as session:
        job = add_job(session)
        assert jobs.start_attempt(session, job.id, "host:1", attempts_seen=0)
        assert not jobs.start_attempt(session, job.id, "host:2", attempts_seen=0)  # raced, lost
        assert jobs.beat(session, job.id, "host:1", {"step": 10}) is False
        assert jobs.beat(session, job.id, "host:2", None) is None  # not its job
        assert not jobs.finish(session, job.id, Status.SUCCEEDED, worker="host:2")
        assert jobs.finish(session, job.id, Status.SUCCEEDED, worker="host:1", metrics={"psnr": 40})
        assert not jobs.finish(session, job.id, Status.FAILED)  # terminal stays terminal
        row = jobs.get(session, job.id)
        assert row is not None and row.status == Status.SUCCEEDED and row.attempts == 1
        assert row.progress == {"step": 10} and row.metrics == {"psnr": 40}
        assert row.started_at is not None and row.finished_at is not None
        assert row.created_at.tzinfo is not None


def test_cancel_ends_a_queued_job_and_flags_a_running_one(ctx: Context) -> None:
    with ctx.sessions() as session:
        queued, running = add_job(session), add_job(session)
        jobs.start_attempt(session, running.id, "host:1", 0)
        jobs.request_cancel(session, queued.id)
        jobs.request_cancel(session, running.id)
        assert (row := jobs.get(session, queued.id)) and row.status == Status.CANCELED
        assert (row := jobs.get(session, running.id)) and row.status == Status.RUNNING
        assert jobs.beat(session, running.id, "host:1", None) is True


def test_a_requeue_needs_the_same_attempt_still_recorded(ctx: Context) -> None:
    with ctx.sessions() as session:
        job = add_job(session)
        jobs.start_attempt(session, job.id, "host:1", 0)
        assert not jobs.requeue(session, job.id, "host:1", attempts=0)
        assert jobs.requeue(session, job.id, "host:1", attempts=1)
        row = jobs.get(session, job.id)
        assert row is not None and row.status == Status.QUEUED and row.worker is None
        assert [r.id for r in jobs.running(session)] == []


def test_a_progress_event_still_unsent_when_its_job_ends_is_dropped(ctx: Context) -> None:
    options = {"preset": "fast", "webhook": "https://example.com/hook",
               "webhook_events": ["start", "progress"]}
    with ctx.sessions() as session:
        job = add_job(session, options=options)
        jobs.start_attempt(session, job.id, "host:1", 0)
        jobs.beat(session, job.id, "host:1", {"step": 10}, progress_event=True)
        owed = {d.event: d.id for d in session.scalars(select(jobs.WebhookDelivery))}
    assert set(owed) == {"start", "progress"}
    start = webhooks.prepare(ctx, owed["start"], lambda row: row.status)
    assert start is not None and start.body == b"running"
    with ctx.sessions() as session:
        assert jobs.finish(session, job.id, Status.SUCCEEDED, worker="host:1")
    assert webhooks.prepare(ctx, owed["progress"], lambda row: row.status) is None
    retried = webhooks.prepare(ctx, owed["start"], lambda row: row.status)
    assert retried is not None and retried.body == b"running"  # fixed at its first attempt
    with ctx.sessions() as session:  # `completed` was not asked for: nothing is owed
        assert [d.event for d in session.scalars(select(jobs.WebhookDelivery))] == ["start"]

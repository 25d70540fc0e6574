"""Jobs that would wait forever: `running` ones whose worker vanished without Celery noticing
(the whole worker killed, or an embedded broker that drops in-flight messages), and `queued`
ones whose message the broker lost (a Redis restarted without its append-only file)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from service import jobs
from service.context import Context
from service.retention import discard_snapshot


def recover_stale_jobs(ctx: Context, enqueue: Callable[[str], None]) -> list[str]:
    """Deliver each orphaned job again, or fail it past the attempt cap; returns requeued ids."""
    requeued = []
    with ctx.sessions() as session:
        for job in jobs.running(session):
            if jobs.attempt_alive(job, ctx.settings.stale_after_s):
                continue
            if job.attempts >= ctx.settings.max_attempts:
                jobs.finish(session, job.id, jobs.Status.FAILED, worker=job.worker,
                            error=jobs.worker_lost(job.attempts))
                discard_snapshot(ctx, job.id)  # no attempt will resume from it
                continue
            # Publish first: a message for a job that is not queued is dropped by the claim,
            # while a queued job without a message would wait forever.
            enqueue(job.id)
            if jobs.requeue(session, job.id, job.worker, job.attempts):
                requeued.append(job.id)
    return requeued


def republish_lost_messages(ctx: Context, enqueue: Callable[[str], None],
                            queue_depth: Callable[[], int]) -> list[str]:
    """Publish again the jobs queued for over `stale_after_s` when fewer messages wait in the
    broker than there are such jobs; returns their ids.

    Which message went missing cannot be told, so every one of them is sent again. A duplicate
    costs little: the first delivery runs the job, and a later one finds it running or done
    (worker.runner.claim). Once the broker holds at least one message per job, nothing is sent.
    """
    before = jobs.utcnow() - timedelta(seconds=ctx.settings.stale_after_s)
    with ctx.sessions() as session:
        waiting = jobs.queued_before(session, before)
    if not waiting or queue_depth() >= len(waiting):
        return []
    for job_id in waiting:
        enqueue(job_id)
    return waiting

"""Jobs whose worker vanished without Celery noticing (the whole worker killed, or an embedded
broker that drops in-flight messages) stay `running` with no live attempt; this finds them."""

from __future__ import annotations

from collections.abc import Callable

from worker import jobs
from worker.context import Context
from worker.runner import attempt_alive, worker_lost


def recover_stale_jobs(ctx: Context, enqueue: Callable[[str], None]) -> list[str]:
    """Deliver each orphaned job again, or fail it past the attempt cap; returns requeued ids."""
    requeued = []
    with ctx.sessions() as session:
        for job in jobs.running(session):
            if attempt_alive(job, ctx.settings.stale_after_s):
                continue
            if job.attempts >= ctx.settings.max_attempts:
                jobs.finish(session, job.id, jobs.Status.FAILED, worker=job.worker,
                            error=worker_lost(job.attempts))
                continue
            # Publish first: a message for a job that is not queued is dropped by the claim,
            # while a queued job without a message would wait forever.
            enqueue(job.id)
            if jobs.requeue(session, job.id, job.worker, job.attempts):
                requeued.append(job.id)
    return requeued

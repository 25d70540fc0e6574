"""Retention: finished jobs and their artifacts are deleted NEXP_RETENTION_S after they end.

Three steps, each safe to repeat: one UPDATE marks every expired job `deleting`, which hides it
from every API read at once; then each such job's artifacts are deleted, then its row. A sweep
cut short (a crash, storage away) leaves hidden `deleting` rows, which the next sweep finishes,
so a listing never shows a job whose artifacts are half gone. Sweeps running at once (several
API replicas) delete the same things twice, which is harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from service import jobs
from service.context import Context
from service.storage import job_prefix, snapshot_prefix

log = logging.getLogger(__name__)


def expire_jobs(ctx: Context, now: datetime | None = None) -> list[str]:
    """Delete the jobs past retention (and any a previous sweep left); returns their ids."""
    retention_s = ctx.settings.retention_s
    if not retention_s:
        return []
    cutoff = (now or jobs.utcnow()) - timedelta(seconds=retention_s)
    with ctx.sessions() as session:
        jobs.mark_deleting(session, cutoff)
        doomed = jobs.deleting(session)
        for job_id in doomed:
            # Artifacts first: the hidden row is what lets the next sweep finish a cut-short one.
            ctx.storage.delete(job_prefix(job_id))
            jobs.delete(session, job_id)
    return doomed


def discard_snapshot(ctx: Context, job_id: str) -> None:
    try:
        ctx.storage.delete(snapshot_prefix(job_id))
        with ctx.sessions() as session:
            jobs.set_snapshot_bytes(session, job_id, 0)
    except Exception:  # the job's prefix goes with a delete or retention all the same
        log.warning("job %s: its snapshot could not be removed", job_id, exc_info=True)

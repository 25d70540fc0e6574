"""Retention: finished jobs expire with their artifacts; a half-done sweep is never visible."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from service import jobs
from service.context import Context
from service.jobs import Status
from service.retention import expire_jobs
from service.storage import Storage, checkpoint_key
from tests.utils.app import serve, settings
from tests.utils.jobs import add_job, context
from tests.utils.service import submit

HOUR = timedelta(hours=1)


@pytest.fixture
def kept_an_hour(tmp_path: Path) -> Iterator[Context]:
    ctx = context(settings(tmp_path, retention_s=3600))
    yield ctx
    ctx.engine.dispose()


def stored_job(ctx: Context, status: Status, finished_ago: timedelta | None) -> str:
    """A job with an input and a checkpoint file, finished `finished_ago` (None: not finished)."""
    finished = None if finished_ago is None else jobs.utcnow() - finished_ago
    with ctx.sessions() as session:
        job = add_job(session, status=status, finished_at=finished)
    ctx.storage.put(job.input_key, b"input")
    ctx.storage.put(checkpoint_key(job.id, "model.safetensors"), b"weights")
    return job.id


def visible(ctx: Context, job_id: str) -> bool:
    with ctx.sessions() as session:
        listed = [job.id for job in jobs.page(session, None, 100, 0)[0]]
        return jobs.visible(session, job_id, None) is not None and job_id in listed


def present(ctx: Context, job_id: str) -> bool:
    """The row or any artifact of the job is still there."""
    with ctx.sessions() as session:
        row = jobs.get(session, job_id)
    return row is not None or ctx.storage.exists(checkpoint_key(job_id, "model.safetensors"))


def test_finished_jobs_past_retention_go_with_their_artifacts(kept_an_hour: Context) -> None:
    ctx = kept_an_hour
    expired = {stored_job(ctx, status, 2 * HOUR)
               for status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)}
    recent = stored_job(ctx, Status.SUCCEEDED, HOUR / 2)
    waiting = stored_job(ctx, Status.QUEUED, None)
    assert set(expire_jobs(ctx)) == expired
    assert not any(present(ctx, job_id) for job_id in expired)
    assert visible(ctx, recent) and visible(ctx, waiting)
    assert expire_jobs(ctx) == []


class BrokenStorage:
    """Storage that cannot delete: a sweep cut short after hiding its jobs."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def delete(self, prefix: str) -> None:
        raise OSError("storage is away")


def test_a_sweep_cut_short_hides_its_jobs_and_the_next_one_finishes(kept_an_hour: Context) -> None:
    ctx = kept_an_hour
    job_id = stored_job(ctx, Status.SUCCEEDED, 2 * HOUR)
    with pytest.raises(OSError, match="storage is away"):
        expire_jobs(replace(ctx, storage=BrokenStorage(ctx.storage)))  # type: ignore[arg-type]
    assert present(ctx, job_id) and not visible(ctx, job_id)  # half-deleted: never shown
    with ctx.sessions() as session:
        # No worker may touch it meanwhile: a late delivery finds it terminal.
        assert not jobs.finish(session, job_id, Status.SUCCEEDED)
    assert expire_jobs(ctx) == [job_id] and not present(ctx, job_id)


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    ctx = context(settings(tmp_path))
    try:
        job_id = stored_job(ctx, Status.SUCCEEDED, 1000 * HOUR)
        assert expire_jobs(ctx) == [] and visible(ctx, job_id)
    finally:
        ctx.engine.dispose()


def test_the_api_sweeps_expired_jobs_by_itself(tmp_path: Path, kodak_crop: Path) -> None:
    cfg = settings(tmp_path, retention_s=1, retention_sweep_s=0.2)
    with serve(cfg) as client:
        done, waiting = submit(client, kodak_crop), submit(client, kodak_crop)
        assert client.post(done["urls"]["cancel"]).json()["status"] == "canceled"  # finished now
        deadline = time.monotonic() + 15
        while client.get(done["urls"]["self"]).status_code != 404:
            assert time.monotonic() < deadline, "the canceled job did not expire"
            time.sleep(0.2)
        assert not (cfg.artifacts_dir / "jobs" / done["id"]).exists()
        assert [job["id"] for job in client.get("/v1/jobs").json()["items"]] == [waiting["id"]]
        assert (cfg.artifacts_dir / "jobs" / waiting["id"]).is_dir()

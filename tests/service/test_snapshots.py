"""Snapshots: a running fit stores its state, a redelivered job resumes from it, and nothing of
it outlives the job (docs/service.md#snapshots-and-resume)."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

import pytest

from model.fit import FitCanceled, FitOptions, fit
from model.signals import load_signal
from model.snapshot import FitSnapshot
from service import jobs
from service.context import Context
from service.jobs import Status
from service.retention import expire_jobs
from service.storage import snapshot_key, snapshot_prefix
from tests.service.conftest import redis_db, service_env
from tests.utils.app import serve, settings
from tests.utils.jobs import add_job, context
from tests.utils.service import Service, started, submit, wait_status
from worker import runner

STEPS = 150  # about 10 s on one busy CPU thread: long enough to kill mid-fit
T = TypeVar("T")


def snapshot_files(ctx: Context, job_id: str) -> list[str]:
    folder = ctx.settings.artifacts_dir / snapshot_prefix(job_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def stored_step(ctx: Context, job_id: str) -> int:
    return FitSnapshot.from_bytes(ctx.storage.get(snapshot_key(job_id))).step


def test_snapshots_replace_each_other_and_a_redelivery_resumes_from_the_last(
        ctx: Context, kodak_crop: Path, pretrain_cache: Path) -> None:
    ctx = replace(ctx, settings=ctx.settings.model_copy(
        update={"cache_dir": pretrain_cache, "snapshot_every_s": 1e-9}))
    with ctx.sessions() as session:
        job = add_job(session, options={"preset": "fast", "steps": 30, "protocol": None},
                      stored_bytes=0)
    ctx.storage.put(job.input_key, kodak_crop.read_bytes())
    # A first attempt that dies at step 12, having stored a snapshot after every step.
    write, steps_seen = runner.SnapshotWriter(job.id, ctx), []

    def store(snapshot: FitSnapshot) -> None:
        write(snapshot)
        steps_seen.append(stored_step(ctx, job.id))
        assert snapshot_files(ctx, job.id) == ["state.safetensors"]  # one object, no debris

    with pytest.raises(FitCanceled):
        fit(load_signal(kodak_crop), FitOptions(steps=30, device="cpu"), cache_dir=pretrain_cache,
            on_snapshot=store, snapshot_every_s=1e-9, should_stop=lambda: len(steps_seen) >= 12)
    assert steps_seen == list(range(1, 13))
    with ctx.sessions() as session:
        size = len(ctx.storage.get(snapshot_key(job.id)))
        assert jobs.stored_bytes(session, None) == size  # the quota counts the snapshot

    runner.run_job(job.id, ctx)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
        assert row is not None and row.status == Status.SUCCEEDED, row and row.error
        assert row.resumed_from_step == 12 and row.progress and row.progress["step"] == 30
        assert row.snapshot_bytes == 0 and jobs.stored_bytes(session, None) == row.stored_bytes
    assert snapshot_files(ctx, job.id) == []  # the job ended: its snapshot went


def test_a_job_that_never_resumed_says_so(ctx: Context, kodak_crop: Path, pretrain_cache: Path) -> None:
    ctx = replace(ctx, settings=ctx.settings.model_copy(update={"cache_dir": pretrain_cache}))
    with ctx.sessions() as session:
        job = add_job(session, options={"preset": "fast", "steps": 3, "protocol": None})
    ctx.storage.put(job.input_key, kodak_crop.read_bytes())
    ctx.storage.put(snapshot_key(job.id), b"not a snapshot")  # unreadable: start over
    runner.run_job(job.id, ctx)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.SUCCEEDED and row.resumed_from_step is None


def test_a_store_that_refuses_snapshots_does_not_fail_the_job(
        ctx: Context, kodak_crop: Path, pretrain_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = replace(ctx, settings=ctx.settings.model_copy(
        update={"cache_dir": pretrain_cache, "snapshot_every_s": 1e-9}))
    with ctx.sessions() as session:
        job = add_job(session, options={"preset": "fast", "steps": 5, "protocol": None})
    ctx.storage.put(job.input_key, kodak_crop.read_bytes())
    put = ctx.storage.put

    def full_for_snapshots(key: str, data: bytes | BinaryIO) -> None:
        if key.startswith(snapshot_prefix(job.id)):
            raise OSError(errno.ENOSPC, "No space left on device")
        put(key, data)

    monkeypatch.setattr(ctx.storage, "put", full_for_snapshots)
    runner.run_job(job.id, ctx)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.SUCCEEDED and row.snapshot_bytes == 0


def test_a_job_that_will_not_resume_loses_its_snapshot(ctx: Context) -> None:
    """At the attempt cap, or canceled before its next delivery, a job left by a dead worker
    keeps no snapshot."""
    with ctx.sessions() as session:
        capped = add_job(session, attempts=ctx.settings.max_attempts, snapshot_bytes=5)
        canceled = add_job(session, cancel_requested=True, snapshot_bytes=5)
    for job in (capped, canceled):
        ctx.storage.put(snapshot_key(job.id), b"state")
        with ctx.sessions() as session:
            assert runner.claim(session, job.id, runner.worker_id(), ctx) is None
        assert not ctx.storage.exists(snapshot_key(job.id))
    with ctx.sessions() as session:
        assert jobs.stored_bytes(session, None) == 0


def test_canceling_a_queued_job_removes_its_snapshot(tmp_path: Path) -> None:
    config = settings(tmp_path)
    ctx = context(config)
    with ctx.sessions() as session:
        job = add_job(session, attempts=1, snapshot_bytes=5)  # requeued after its worker died
    ctx.storage.put(snapshot_key(job.id), b"state")
    ctx.engine.dispose()
    with serve(config) as client:
        answer = client.post(f"/v1/jobs/{job.id}/cancel")
        assert answer.status_code == 202 and answer.json()["status"] == "canceled"
    assert not ctx.storage.exists(snapshot_key(job.id))


def test_retention_removes_snapshots(tmp_path: Path) -> None:
    ctx = context(settings(tmp_path, retention_s=3600))
    try:
        with ctx.sessions() as session:
            job = add_job(session, status=Status.FAILED,
                          finished_at=jobs.utcnow() - timedelta(hours=2))
        ctx.storage.put(snapshot_key(job.id), b"state")
        assert expire_jobs(ctx) == [job.id]
        assert not ctx.storage.exists(snapshot_key(job.id))
    finally:
        ctx.engine.dispose()


# ----------------------------------------------------------------- a real worker, killed


@pytest.fixture(scope="module")
def snapshotting(tmp_path_factory: pytest.TempPathFactory,
                 pretrain_cache: Path) -> Iterator[Service]:
    """A service of its own (Redis DB 11) whose fits store a snapshot every 0.2 s."""
    data = tmp_path_factory.mktemp("snapshotting")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(11),
                      NEXP_SNAPSHOT_EVERY_S="0.2")
    yield from started(Service(data, env))


def snapshot_path(service: Service, job_id: str) -> Path:
    return service.data / "artifacts" / snapshot_key(job_id)


def wait_for_snapshot(service: Service, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not snapshot_path(service, job_id).is_file():
        assert time.monotonic() < deadline, f"no snapshot of {job_id} in {timeout} s"
        time.sleep(0.05)


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value} after {timeout} s"
        time.sleep(0.1)
    return value


def test_a_killed_worker_child_resumes_from_its_snapshot(
        snapshotting: Service, kodak_crop: Path) -> None:
    with snapshotting.client() as client:
        whole = submit(client, kodak_crop, steps=STEPS, seed=3)
        uninterrupted = wait_status(client, whole["id"], "succeeded", "failed")
        assert uninterrupted["resumed_from_step"] is None, uninterrupted

        job = submit(client, kodak_crop, steps=STEPS, seed=3)
        wait_for_snapshot(snapshotting, job["id"])
        pid = int((snapshotting.row(job["id"]).worker or "").rpartition(":")[2])
        os.kill(pid, signal.SIGKILL)

        done = wait_status(client, job["id"], "succeeded", "failed", "canceled")
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert 0 < done["resumed_from_step"] < STEPS, done
        # Within noise of the uninterrupted fit (the same seed: the same batches, here equal).
        assert done["metrics"]["psnr"] == pytest.approx(uninterrupted["metrics"]["psnr"], abs=0.5)
        assert not snapshot_path(snapshotting, job["id"]).exists()


def test_a_running_job_previews_and_deleting_it_removes_its_snapshot(
        snapshotting: Service, kodak_crop: Path) -> None:
    with snapshotting.client() as client:
        job = submit(client, kodak_crop, steps=5000)
        wait_for_snapshot(snapshotting, job["id"])
        running = wait_for(lambda: client.get(job["urls"]["self"]).json(),
                           lambda job: job["snapshot_step"] is not None)
        assert running["status"] == "running" and running["snapshot_step"] > 0, running
        preview = client.get(job["urls"]["reconstruction"])
        assert preview.status_code == 200 and preview.headers["x-fit-preview"] == "true"
        assert int(preview.headers["x-fit-step"]) >= running["snapshot_step"]  # or a newer one
        assert client.delete(job["urls"]["self"]).status_code == 204
        folder = snapshotting.data / "artifacts" / "jobs" / job["id"]
        deadline = time.monotonic() + 30  # the worker stops within a heartbeat and tidies up
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
        follow = submit(client, kodak_crop, steps=5)  # the worker is free again
        assert wait_status(client, follow["id"], "succeeded", "failed")["status"] == "succeeded"

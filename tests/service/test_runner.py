"""worker.runner: one delivery of a job, run in this process against a real database."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from torch._dynamo.exc import InternalTorchDynamoError

from model.checkpoint import load_checkpoint
from model.fit import FitDiverged
from model.signals import SignalError
from service import jobs
from service.context import Context
from service.jobs import Status
from service.recovery import recover_stale_jobs, republish_lost_messages
from service.settings import Settings
from service.storage import checkpoint_key, checkpoint_prefix
from tests.utils.jobs import add_job
from worker import runner
from worker.celery_app import make_celery, prepare_broker, publish_fit, queue_depth


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def claimed(ctx: Context, job_id: str, me: str = "") -> jobs.Job | None:
    with ctx.sessions() as session:
        return runner.claim(session, job_id, me or runner.worker_id(), ctx)


def test_a_queued_job_is_claimed_and_a_finished_one_is_left_alone(ctx: Context) -> None:
    with ctx.sessions() as session:
        queued, done = add_job(session), add_job(session, status=Status.SUCCEEDED)
    job = claimed(ctx, queued.id)
    assert job is not None and job.status == Status.RUNNING and job.attempts == 1
    assert job.worker == runner.worker_id()
    assert claimed(ctx, done.id) is None and claimed(ctx, "no-such-job") is None


def test_a_live_attempt_makes_a_second_delivery_wait(ctx: Context) -> None:
    with ctx.sessions() as session:
        job = add_job(session)
    claimed(ctx, job.id)  # this process: alive
    with pytest.raises(runner.Busy) as busy:
        claimed(ctx, job.id, "elsewhere:1")
    assert busy.value.retry_in_s == ctx.settings.stale_after_s


def test_a_dead_attempt_is_redelivered_until_the_cap(ctx: Context) -> None:
    host = runner.worker_id().rpartition(":")[0]
    with ctx.sessions() as session:
        job = add_job(session, status=Status.RUNNING, attempts=1, worker=f"{host}:{dead_pid()}",
                      heartbeat_at=jobs.utcnow())
    again = claimed(ctx, job.id)
    assert again is not None and again.attempts == 2
    with ctx.sessions() as session:
        session.execute(update(jobs.Job).values(worker=f"{host}:{dead_pid()}"))
        session.commit()
    assert claimed(ctx, job.id) is None
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.FAILED and row.error is not None
    assert row.error["code"] == "worker_lost"


def test_a_job_canceled_before_its_delivery_is_not_run(ctx: Context) -> None:
    with ctx.sessions() as session:
        job = add_job(session, status=Status.RUNNING, cancel_requested=True)
    assert claimed(ctx, job.id) is None
    with ctx.sessions() as session:
        assert (row := jobs.get(session, job.id)) and row.status == Status.CANCELED


@pytest.mark.parametrize(("error", "code"), [
    (SignalError("bad pixels", "undecodable"), "invalid_signal"),
    (FitDiverged("nan"), "diverged"),
    (ValueError("unknown preset"), "invalid_options"),
    (torch.OutOfMemoryError("CUDA out of memory"), "out_of_memory"),
    (MemoryError(), "out_of_memory"),
    (SoftTimeLimitExceeded(), "time_limit"),
    (KeyError("surprise"), "internal"),
])
def test_failures_become_job_errors(error: Exception, code: str) -> None:
    described = runner.job_error(error)
    assert described["code"] == code and described["title"] and described["detail"]


def raised(error: Exception, handling: Exception) -> Exception:
    """`error` as raised while handling `handling`, with its context suppressed (`from None`)."""
    try:
        try:
            raise handling
        except type(handling):
            raise error from None
    except type(error) as e:
        return e


def test_a_time_limit_a_wrapper_reraised_is_still_a_time_limit() -> None:
    """torch.compile re-raises a soft time limit that strikes while it traces as its own error."""
    wrapped = raised(InternalTorchDynamoError("SoftTimeLimitExceeded: ..."), SoftTimeLimitExceeded())
    assert runner.job_error(wrapped)["code"] == "time_limit"
    out_of_memory = raised(RuntimeError("backend failed"), torch.OutOfMemoryError("CUDA"))
    assert runner.job_error(out_of_memory)["code"] == "out_of_memory"
    # Other errors in a chain do not change what failed.
    assert runner.job_error(raised(KeyError("surprise"), ValueError("bad")))["code"] == "internal"


def test_an_unusable_input_fails_the_job_and_stores_nothing(ctx: Context) -> None:
    with ctx.sessions() as session:
        job = add_job(session)
    ctx.storage.put(job.input_key, b"\x89PNG\r\n\x1a\n" + bytes(100))
    runner.run_job(job.id, ctx)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.FAILED and row.attempts == 1
    assert row.error is not None and row.error["code"] == "invalid_signal"
    assert not ctx.storage.exists(checkpoint_key(job.id, "config.json"))


def test_a_job_is_fitted_and_its_checkpoint_stored(ctx: Context, kodak_crop: Path,
                                                   pretrain_cache: Path) -> None:
    ctx = replace(ctx, settings=ctx.settings.model_copy(update={"cache_dir": pretrain_cache}))
    with ctx.sessions() as session:
        job = add_job(session, options={"preset": "fast", "steps": 3, "protocol": None})
    ctx.storage.put(job.input_key, kodak_crop.read_bytes())
    runner.run_job(job.id, ctx)
    runner.run_job(job.id, ctx)  # a second delivery of a finished job changes nothing
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.SUCCEEDED and row.attempts == 1, row.error
    assert row.progress is not None and row.progress["step"] == 3
    assert row.metrics is not None and row.metrics["psnr"] > 0
    folder = ctx.settings.artifacts_dir / checkpoint_prefix(job.id)
    _, config = load_checkpoint(folder)
    assert config["fit"]["steps"] == 3
    # The stored-bytes quota counts the checkpoint (add_job's row did not count the input).
    assert row.stored_bytes == sum(f.stat().st_size for f in folder.iterdir())


def test_the_watchdog_reports_progress_and_relays_a_cancel(ctx: Context,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(runner.os, "_exit", exits.append)
    with ctx.sessions() as session:
        job = add_job(session)
    me = runner.worker_id()
    claimed(ctx, job.id, me)
    watchdog = runner.Watchdog(job.id, me, ctx)
    watchdog.start()
    try:
        watchdog.report(runner.Progress(10, 100, 0.5, float("nan"), 3.0, "fit"))
        with ctx.sessions() as session:
            jobs.request_cancel(session, job.id)
        assert watchdog.canceled.wait(5)
        deadline = time.monotonic() + 5  # the fit ignores the cancel: past the grace, it ends
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watchdog.stop()
    assert exits and set(exits) == {1}  # the process would have ended at the first
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.CANCELED
    assert row.progress == {"step": 10, "total": 100, "loss": 0.5, "metric": None, "eta_s": 3.0,
                            "stage": "fit"}


def test_orphaned_running_jobs_are_requeued_or_failed(ctx: Context) -> None:
    host = runner.worker_id().rpartition(":")[0]
    with ctx.sessions() as session:
        orphan = add_job(session, status=Status.RUNNING, attempts=1,
                         worker=f"{host}:{dead_pid()}", heartbeat_at=jobs.utcnow())
        spent = add_job(session, status=Status.RUNNING, attempts=2, worker="far:1",
                        heartbeat_at=jobs.utcnow() - timedelta(hours=1))
        alive = add_job(session, status=Status.RUNNING, attempts=1, worker=f"{host}:{os.getpid()}",
                        heartbeat_at=jobs.utcnow())
    sent: list[str] = []
    assert recover_stale_jobs(ctx, sent.append) == [orphan.id] and sent == [orphan.id]
    with ctx.sessions() as session:
        statuses = {j: (jobs.get(session, j) or orphan).status
                    for j in (orphan.id, spent.id, alive.id)}
    assert statuses == {orphan.id: Status.QUEUED, spent.id: Status.FAILED,
                        alive.id: Status.RUNNING}


def test_queued_jobs_missing_from_the_broker_are_published_again(ctx: Context) -> None:
    """On a real (embedded, filesystem) broker: a message per old queued job means no action."""
    prepare_broker(ctx.settings)
    celery = make_celery(ctx.settings)
    depth = partial(queue_depth, celery)
    enqueue = partial(publish_fit, celery)
    old = jobs.utcnow() - timedelta(seconds=2 * ctx.settings.stale_after_s)
    with ctx.sessions() as session:
        lost = add_job(session, updated_at=old)
        add_job(session)  # just queued: its message may still be on its way
        add_job(session, status=Status.RUNNING, updated_at=old)
    assert republish_lost_messages(ctx, enqueue, depth) == [lost.id]
    assert depth() == 1
    assert republish_lost_messages(ctx, enqueue, depth) == []  # the broker holds its message now
    assert depth() == 1


def test_a_job_without_steps_or_budget_gets_the_workers_default_budget() -> None:
    settings = Settings(default_time_budget_s=300)
    assert runner.default_budget({"lr": 1e-3}, settings) == {"lr": 1e-3, "time_budget_s": 300}
    assert runner.default_budget({"steps": 5}, settings) == {"steps": 5}  # today's behaviour
    assert runner.default_budget({"time_budget_s": 9.0}, settings) == {"time_budget_s": 9.0}
    assert runner.default_budget({}, Settings(default_time_budget_s=0)) == {}  # 0: none

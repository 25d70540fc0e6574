"""api.metrics: job wait and run times and GPU memory, read from the job table at scrape time."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import torch

from api.metrics import job_times
from service.context import Context
from service.jobs import Status, utcnow
from tests.utils.jobs import add_job
from worker.runner import gpu_peak


def test_waits_run_times_and_gpu_peaks(ctx: Context) -> None:
    now = utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    with ctx.sessions() as session:
        add_job(session, created_at=ago(30))
        add_job(session, created_at=ago(5))
        add_job(session, status=Status.RUNNING, started_at=ago(12),
                progress={"step": 1, "gpu_peak_bytes": 7_000})
        for seconds in (2, 4, 6, 8):
            add_job(session, status=Status.SUCCEEDED, started_at=ago(100 + seconds),
                    finished_at=ago(100), progress={"step": 5, "gpu_peak_bytes": 1_000})
        add_job(session, status=Status.FAILED, started_at=ago(3), finished_at=ago(1))
        add_job(session, status=Status.SUCCEEDED, started_at=ago(7300), finished_at=ago(7200),
                progress={"gpu_peak_bytes": 10**12})  # finished two hours ago: not counted
        metrics = {m.name: m.samples for m in job_times(session)}

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in metrics[name] if s.labels == labels)

    assert value("nexp_job_queued_seconds_max") == pytest.approx(30, abs=2)
    assert value("nexp_job_running_seconds_max") == pytest.approx(12, abs=2)
    assert value("nexp_job_duration_seconds", status="succeeded", quantile="0.5") == pytest.approx(4)
    assert value("nexp_job_duration_seconds", status="succeeded", quantile="0.9") == pytest.approx(8)
    assert value("nexp_job_duration_seconds", status="failed", quantile="1") == pytest.approx(2)
    assert value("nexp_gpu_memory_peak_bytes") == 7_000


def test_an_empty_table_reads_as_zeros(ctx: Context) -> None:
    with ctx.sessions() as session:
        metrics = {m.name: m.samples for m in job_times(session)}
    assert [s.value for s in metrics["nexp_job_queued_seconds_max"]] == [0.0]
    assert metrics["nexp_job_duration_seconds"] == []
    assert [s.value for s in metrics["nexp_gpu_memory_peak_bytes"]] == [0]


def test_the_progress_carries_the_gpu_peak_only_where_cuda_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_peak() == {}  # these tests never touch CUDA
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i: 100 * (i + 1))
    assert gpu_peak() == {"gpu_peak_bytes": 300}

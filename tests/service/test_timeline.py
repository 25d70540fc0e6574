"""The fit's course kept with its job: a bounded, evenly thinned curve and timed stages
(worker.timeline), written by the runner and served with the job."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from api.schemas import job_public
from model.fit import Progress
from service import jobs
from service.context import Context
from service.jobs import Status
from tests.utils.jobs import add_job
from worker import runner
from worker.timeline import MAX_POINTS, Curve, Timeline


def test_a_long_curve_is_thinned_evenly_and_keeps_its_latest_point() -> None:
    curve = Curve()
    for step in range(10, 100_001, 10):
        curve.add(step, 1 / step, float(step))
    assert len(curve.step) <= MAX_POINTS
    grid = curve.step[:-1]  # the latest point lies wherever the fit got to
    gaps = {b - a for a, b in zip(grid[:-1], grid[1:], strict=True)}
    assert len(gaps) == 1 and grid[0] in gaps  # evenly spaced from the start
    assert curve.step[-1] == 100_000 and len(curve.step) > MAX_POINTS // 2
    curve.add(100_005, 0.5, float("nan"))  # a budget's last step, off the grid, is kept ...
    assert curve.step[-1] == 100_005 and curve.metric[-1] is None  # ... and NaN is JSON's null
    curve.add(100_007, 0.5, 1.0)  # ... until a later one takes its place
    assert curve.step[-1] == 100_007 and curve.step[-2] == grid[-1]


def test_a_resumed_timeline_forgets_the_steps_it_redoes() -> None:
    first = Timeline()
    for stage, step in [("pretrain", 0), ("fit", 10), ("fit", 20), ("experts", 30)]:
        first.add(Progress(step, 40, 0.1, 20.0, 5.0, stage))
    assert [s["name"] for s in first.stages.items] == ["pretrain", "fit"]  # experts-only is fitting
    saved = first.columns()
    resumed = Timeline.resumed(saved["history"], saved["stages"], step=20)
    assert resumed.curve.step == [10, 20]
    assert resumed.stages.items[-1]["name"] == "fit" and resumed.stages.items[-1]["ended_at"] is None
    assert resumed.stages.items[0] == saved["stages"][0]


def test_a_finished_job_keeps_its_curve_and_stages_and_shows_no_eta(
        ctx: Context, kodak_crop: Path, pretrain_cache: Path) -> None:
    ctx = replace(ctx, settings=ctx.settings.model_copy(update={"cache_dir": pretrain_cache}))
    with ctx.sessions() as session:
        job = add_job(session, options={"preset": "fast", "steps": 30, "protocol": None})
    ctx.storage.put(job.input_key, kodak_crop.read_bytes())
    runner.run_job(job.id, ctx)
    with ctx.sessions() as session:
        row = jobs.get(session, job.id)
    assert row is not None and row.status == Status.SUCCEEDED, row and row.error
    public = job_public(row)
    assert public.history is not None and public.history.step[-1] == 30
    assert len(public.history.loss) == len(public.history.step) > 1
    assert [s.name for s in public.stages] == ["pretrain", "fit", "evaluate"]
    assert all(s.ended_at is not None and s.elapsed_s >= 0 for s in public.stages)
    assert public.progress is not None and public.progress.eta_s is None
    assert job_public(row, with_history=False).history is None


def test_a_stage_open_when_its_job_ended_ends_with_it(ctx: Context) -> None:
    started = jobs.utcnow() - timedelta(seconds=50)
    with ctx.sessions() as session:  # a job canceled by the watchdog, mid-fit
        job = add_job(session, status=Status.CANCELED, finished_at=started + timedelta(seconds=20),
                      progress={"step": 5, "total": 10, "loss": 0.1, "metric": 20.0, "eta_s": 9.0,
                                "stage": "fit"},
                      stages=[{"name": "fit", "started_at": started.isoformat(), "ended_at": None}])
    public = job_public(job)
    assert public.stages[0].elapsed_s == 20.0
    assert public.progress is not None and public.progress.eta_s is None

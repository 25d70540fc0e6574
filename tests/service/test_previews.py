"""Previews: a running job's outputs come from its fit's latest snapshot, marked as such."""

from __future__ import annotations

from pathlib import Path

from model.fit import FitOptions, fit
from model.signals import load_signal
from model.snapshot import FitSnapshot
from service import jobs
from service.jobs import Status
from service.storage import LocalStorage, snapshot_key
from tests.utils.app import serve, settings
from tests.utils.jobs import add_job, context
from tests.utils.service import assert_problem
from worker import runner


def test_a_running_job_previews_its_latest_snapshot(tmp_path: Path, kodak_crop: Path,
                                                   pretrain_cache: Path) -> None:
    taken: list[FitSnapshot] = []
    fit(load_signal(kodak_crop), FitOptions(steps=12, device="cpu"), cache_dir=pretrain_cache,
        on_snapshot=taken.append, snapshot_every_s=1e-9)
    config = settings(tmp_path)
    ctx = context(config)
    with ctx.sessions() as session:
        # Run by this live process, as far as the API's recovery loop can tell.
        job = add_job(session, status=Status.RUNNING, worker=runner.worker_id(),
                      heartbeat_at=jobs.utcnow())
    ctx.engine.dispose()
    url = f"/v1/jobs/{job.id}"
    storage = LocalStorage(config.artifacts_dir)
    with serve(config) as client:
        assert_problem(client.get(f"{url}/reconstruction"), 409, "job_not_ready")  # none yet
        for snapshot in (taken[4], taken[-1]):  # a newer snapshot replaces the older's preview
            storage.put(snapshot_key(job.id), snapshot.to_bytes())
            for output in ("reconstruction", "experts"):
                answer = client.get(f"{url}/{output}")
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == "image/png"
                assert answer.headers["x-fit-preview"] == "true"
                assert answer.headers["x-fit-step"] == str(snapshot.step)
            answer = client.post(f"{url}/query", json={"coords": [[0, 0], [0.5, -0.5]]})
            assert answer.status_code == 200 and len(answer.json()["values"]) == 2
            assert answer.headers["x-fit-step"] == str(snapshot.step)
        assert_problem(client.get(f"{url}/metrics"), 409, "job_not_ready")  # final results only

"""Faults: cancels, killed workers, a broker that is down. A job always ends; nothing is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.service.conftest import redis_db, service_env
from tests.utils.service import Service, assert_problem, create_job, started, submit, wait_for, wait_status


def training(job: dict[str, Any]) -> bool:
    """Running past pretraining: the fit loop has reported a step."""
    return job["status"] == "running" and (job["progress"] or {}).get("step", 0) > 0


def kill_attempt(client: httpx.Client, service: Service, job_id: str, attempt: int) -> None:
    """SIGKILL the pool child running the job's `attempt`, once it is training."""
    wait_for(client, job_id, lambda job: job["attempts"] == attempt and training(job),
             f"attempt {attempt} training")
    pid = int((service.row(job_id).worker or "").rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)


def test_a_running_job_is_canceled_within_seconds(client: httpx.Client,
                                                  kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=5000)
    waiting = submit(client, kodak_crop, steps=5000)  # queued behind it: one job per worker
    wait_for(client, job["id"], training, "training")

    queued = client.post(waiting["urls"]["cancel"])
    assert queued.status_code == 202 and queued.json()["status"] == "canceled"

    asked = time.monotonic()
    answer = client.post(job["urls"]["cancel"])
    assert answer.status_code == 202 and answer.json()["cancel_requested"]
    done = wait_status(client, job["id"], "canceled", "succeeded", "failed", timeout=30)
    assert done["status"] == "canceled" and time.monotonic() - asked < 10
    assert done["progress"]["step"] < 5000 and done["metrics"] is None
    assert client.post(job["urls"]["cancel"]).status_code == 202  # idempotent
    assert_problem(client.get(job["urls"]["reconstruction"]), 409, "job_not_ready")


def test_a_job_canceled_during_pretraining_stops_within_seconds(
        client: httpx.Client, kodak_crop: Path, tmp_path: Path) -> None:
    """Manager pretraining checks the cancel flag between its steps, as the fit loop does."""
    with Image.open(kodak_crop) as image:  # a shape of its own: its pretraining is not cached
        image.crop((0, 0, 32, 20)).save(tmp_path / "strip.png")
    # The paper preset: its 3000 pretraining steps are a window long enough to cancel in
    # (the fast preset's 20 band steps are over in well under a second).
    job = submit(client, tmp_path / "strip.png", preset="paper", steps=50)
    wait_for(client, job["id"], lambda j: (j["progress"] or {}).get("stage") == "pretrain",
             "pretraining")
    asked = time.monotonic()
    client.post(job["urls"]["cancel"])
    done = wait_status(client, job["id"], "canceled", "succeeded", "failed", timeout=60)
    assert done["status"] == "canceled" and time.monotonic() - asked < 10, done
    follow = submit(client, kodak_crop, steps=5)  # the worker carries on with a new child
    assert wait_status(client, follow["id"], "succeeded", "failed")["status"] == "succeeded"


def test_a_killed_worker_child_is_redelivered_and_the_job_recovers(
        client: httpx.Client, service: Service, kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=100)
    kill_attempt(client, service, job["id"], attempt=1)
    done = wait_status(client, job["id"], "succeeded", "failed", "canceled")
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert client.get(done["urls"]["reconstruction"]).status_code == 200


def test_a_job_that_kills_every_worker_fails_at_the_attempt_cap(
        client: httpx.Client, service: Service, kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=2000)
    kill_attempt(client, service, job["id"], attempt=1)
    kill_attempt(client, service, job["id"], attempt=2)
    done = wait_status(client, job["id"], "failed", "succeeded", "canceled", timeout=60)
    assert done["status"] == "failed" and done["attempts"] == 2, done
    assert done["error"]["code"] == "worker_lost"


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory,
                pretrain_cache: Path) -> Iterator[Service]:
    """A service of its own (Redis DB 6), whose API notices a silent job after 3 s."""
    data = tmp_path_factory.mktemp("restartable")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(6), NEXP_STALE_AFTER_S="3")
    yield from started(Service(data, env))


def test_a_job_whose_whole_worker_died_runs_again_on_a_new_worker(
        restartable: Service, kodak_crop: Path) -> None:
    with restartable.client() as client:
        job = submit(client, kodak_crop, steps=100)
        wait_for(client, job["id"], training, "training")
        worker = restartable.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool child, with no warning
        worker.wait()
        restartable.start_worker()
        done = wait_status(client, job["id"], "succeeded", "failed", "canceled", timeout=240)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done


def test_a_job_past_its_time_limit_fails(tmp_path_factory: pytest.TempPathFactory,
                                         pretrain_cache: Path, kodak_crop: Path) -> None:
    data = tmp_path_factory.mktemp("limited")
    # The soft limit (4 s) raises in the fit; should it be swallowed (torch.compile falls back
    # on errors while it compiles), the hard limit (7 s) kills the child and the parent records it.
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(8), NEXP_TIME_LIMIT_S="4",
                      NEXP_TIME_LIMIT_GRACE_S="3")
    for service in started(Service(data, env)):
        with service.client() as client:
            job = submit(client, kodak_crop, steps=5000)
            done = wait_status(client, job["id"], "failed", "succeeded", "canceled", timeout=60)
    assert done["status"] == "failed" and done["error"]["code"] == "time_limit", done


def test_a_broker_that_is_down_gets_503_and_nothing_is_kept(
        tmp_path: Path, pretrain_cache: Path, kodak_crop: Path) -> None:
    # Nothing listens on port 1: every publish fails at once.
    service = Service(tmp_path, service_env(tmp_path, pretrain_cache,
                                            NEXP_BROKER_URL="redis://127.0.0.1:1/0"))
    try:
        service.start_api()
        with service.client() as client:
            body = assert_problem(create_job(client, kodak_crop, steps=5), 503,
                                  "broker_unavailable")
            assert "nothing was kept" in body["detail"]
            assert client.get("/v1/jobs").json()["total"] == 0
            ready = assert_problem(client.get("/readyz"), 503, "not_ready")
            assert ready["checks"]["broker"] != "ok" and ready["checks"]["database"] == "ok"
    finally:
        service.stop_all()
    assert not list((tmp_path / "artifacts").glob("jobs/*"))

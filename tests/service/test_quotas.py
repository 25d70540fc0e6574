"""Quotas per API key and admission control, on the app in this process with settings of its
own: real Redis (DB 10) or the embedded database for the counters, no worker (jobs stay queued)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import redis_db
from tests.utils.app import api_key, bearer, serve, settings
from tests.utils.service import assert_problem, create_job, submit

STORES = ["redis", "database"]


def config(tmp_path: Path, store: str = "database", **fields: Any) -> Settings:
    broker = redis_db(10) if store == "redis" else ""  # "" = embedded broker, database counters
    return settings(tmp_path, broker_url=broker, **fields)


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    body = assert_problem(response, status, code)
    assert int(response.headers["retry-after"]) > 0, response.headers
    return body


def stored_jobs(config: Settings) -> list[str]:
    folder = config.artifacts_dir / "jobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def fresh_minute() -> Iterator[None]:
    """Start well inside a minute: a fixed window ending mid-test would reset the counts."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.1)
    yield


@pytest.mark.parametrize("store", STORES)
def test_jobs_at_once_are_capped_per_key(tmp_path: Path, kodak_crop: Path, store: str) -> None:
    cfg = config(tmp_path, store, quota_active_jobs=2)
    a, b = bearer(api_key(cfg, "a")), bearer(api_key(cfg, "b"))
    with serve(cfg) as client:
        client.headers.update(a)
        first, _ = submit(client, kodak_crop), submit(client, kodak_crop)
        before = stored_jobs(cfg)
        body = refused(create_job(client, kodak_crop), 429, "quota_exceeded")
        assert body["quota"] == "active_jobs" and body["limit"] == 2
        assert stored_jobs(cfg) == before and client.get("/v1/jobs").json()["total"] == 2

        assert create_job(client, kodak_crop, headers=b).status_code == 202  # B has its own
        assert client.post(first["urls"]["cancel"]).status_code == 202  # a slot frees up
        assert create_job(client, kodak_crop).status_code == 202


@pytest.mark.parametrize("store", STORES)
def test_uploads_per_minute_are_capped_per_key(tmp_path: Path, kodak_crop: Path, store: str,
                                               fresh_minute: None) -> None:
    cfg = config(tmp_path, store, quota_uploads_per_minute=2)
    a, b = bearer(api_key(cfg, "a")), bearer(api_key(cfg, "b"))
    replay = {**a, "Idempotency-Key": "first"}
    with serve(cfg) as client:
        first = create_job(client, kodak_crop, headers=replay).json()
        assert create_job(client, kodak_crop, headers=a).status_code == 202
        answer = create_job(client, kodak_crop, headers=a)
        body = refused(answer, 429, "quota_exceeded")
        assert body["quota"] == "uploads_per_minute" and int(answer.headers["retry-after"]) <= 60
        # A retry of an accepted upload is no new upload; another key counts apart.
        assert create_job(client, kodak_crop, headers=replay).json()["id"] == first["id"]
        assert create_job(client, kodak_crop, headers=b).status_code == 202


def test_stored_bytes_are_capped_per_key(tmp_path: Path, kodak_crop: Path) -> None:
    size = kodak_crop.stat().st_size
    cfg = config(tmp_path, quota_stored_bytes=size * 3 // 2)
    with serve(cfg) as client:
        client.headers.update(bearer(api_key(cfg, "a")))
        first = submit(client, kodak_crop)
        body = refused(create_job(client, kodak_crop), 429, "quota_exceeded")
        assert body["quota"] == "stored_bytes" and f"{size:,}" in body["detail"]
        assert client.delete(first["urls"]["self"]).status_code == 204  # room again
        assert create_job(client, kodak_crop).status_code == 202


@pytest.mark.parametrize("store", STORES)
def test_a_deep_queue_refuses_new_jobs_with_nothing_kept(tmp_path: Path, kodak_crop: Path,
                                                         store: str) -> None:
    cfg = config(tmp_path, store, max_queue_depth=2)
    with serve(cfg) as client:  # no keys: the bound holds for everyone, auth or not
        submit(client, kodak_crop), submit(client, kodak_crop)
        before = stored_jobs(cfg)
        body = refused(create_job(client, kodak_crop), 503, "queue_full")
        assert "NEXP_MAX_QUEUE_DEPTH=2" in body["detail"]
        assert stored_jobs(cfg) == before and client.get("/v1/jobs").json()["total"] == 2


def test_quota_counters_down_mean_503_not_a_free_pass(tmp_path: Path, kodak_crop: Path) -> None:
    cfg = settings(tmp_path, broker_url="redis://127.0.0.1:1/0", quota_uploads_per_minute=5,
                   max_queue_depth=0)
    with serve(cfg) as client:
        assert_problem(create_job(client, kodak_crop), 503, "broker_unavailable")
        assert stored_jobs(cfg) == []

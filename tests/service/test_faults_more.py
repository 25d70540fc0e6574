"""More faults, each injected into a real service: a worker stopped with SIGTERM, Redis and the
API restarted mid-fit, the database away for a while, artifact storage full or read-only, and a
fit that diverges. Every job ends in the state it should, and its artifacts are all there (or,
for a failed job, only its input is).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from model.checkpoint import CONFIG, METRICS, WEIGHTS
from tests.service.conftest import service_env
from tests.service.test_faults import training
from tests.service.test_postgres import scratch_schema, server_url
from tests.utils.mounts import remount, tmpfs
from tests.utils.proxy import TcpProxy
from tests.utils.redis_server import RedisServer
from tests.utils.service import (
    Service,
    assert_problem,
    create_job,
    started,
    stop,
    submit,
    wait_for,
    wait_status,
)

STEPS = 300  # a fit that is still training seconds after its first progress report
CHECKPOINT = {f"model/{name}" for name in (CONFIG, METRICS, WEIGHTS)}
SETTLE_S = 240  # a job's end, on a busy 2-core machine
GRACE_S = 1  # what a supervisor allows a stopping worker before killing it (docker: 10 s)


def stored(root: Path, job_id: str) -> set[str]:
    """Every file in the job's artifact folder, temporary names included, relative to it."""
    folder = root / "jobs" / job_id
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def settled(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    return wait_status(client, job["id"], "succeeded", "failed", "canceled", timeout=SETTLE_S)


def assert_succeeded(client: httpx.Client, root: Path, job: dict[str, Any],
                     attempts: int = 1) -> None:
    """The job succeeded in `attempts` deliveries, its whole checkpoint is stored and served."""
    done = settled(client, job)
    assert done["status"] == "succeeded" and done["attempts"] == attempts, done
    assert stored(root, job["id"]) == {"input.png", *CHECKPOINT}
    image = client.get(done["urls"]["reconstruction"], params={"width": 16, "height": 16})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert client.get(done["urls"]["weights"]).status_code == 200
    assert client.get(done["urls"]["metrics"]).json() == done["metrics"]


def assert_failed(client: httpx.Client, root: Path, job: dict[str, Any], code: str) -> None:
    """The job failed with `code`; only its input is stored, no part of a checkpoint."""
    done = settled(client, job)
    assert done["status"] == "failed" and done["error"]["code"] == code, done
    assert done["error"]["title"] and done["error"]["detail"], done
    assert stored(root, job["id"]) == {"input.png"}
    assert_problem(client.get(done["urls"]["reconstruction"]), 409, "job_not_ready")


# --- a service on a Redis of its own: worker SIGTERM, Redis restart, API restart ---------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path,
                own_redis: RedisServer) -> Iterator[Service]:
    """Its API notices a job whose worker went silent after 3 s."""
    data = tmp_path_factory.mktemp("own-redis")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=own_redis.url,
                      NEXP_STALE_AFTER_S="3")
    yield from started(Service(data, env))


@pytest.fixture
def private(own_service: Service, own_redis: RedisServer) -> Iterator[Service]:
    """The service, whole again after each test, whatever the test stopped."""
    yield own_service
    if not own_redis.answers():
        own_redis.start()
    if own_service.processes["worker"].poll() is not None:
        own_service.start_worker()
    if own_service.processes["api"].poll() is not None:
        own_service.start_api()


def test_a_worker_stopped_with_sigterm_finishes_its_job_and_leaves_the_queue(
        private: Service, kodak_crop: Path) -> None:
    """SIGTERM is Celery's warm shutdown: the running job ends normally (acks_late acks it
    then), the queued one stays in the broker for the next worker, and the worker exits."""
    artifacts = private.data / "artifacts"
    with private.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        behind = submit(client, kodak_crop, steps=5)
        wait_for(client, job["id"], training, "training")
        worker = private.processes["worker"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(SETTLE_S) == 0
        assert_succeeded(client, artifacts, job)
        assert client.get(behind["urls"]["self"]).json()["status"] == "queued"
        private.start_worker()
        assert_succeeded(client, artifacts, behind)


def test_a_worker_killed_after_its_sigterm_grace_runs_the_job_again(
        private: Service, kodak_crop: Path) -> None:
    """A supervisor kills a worker that is still busy when the grace after SIGTERM is over
    (docker stop: 10 s, then SIGKILL). The API requeues the silent job; it runs again."""
    with private.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        wait_for(client, job["id"], training, "training")
        worker = private.processes["worker"]
        worker.send_signal(signal.SIGTERM)
        time.sleep(GRACE_S)
        assert worker.poll() is None, "the worker did not wait for its job"
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        private.start_worker()
        assert_succeeded(client, private.data / "artifacts", job, attempts=2)


def test_a_redis_restart_mid_fit_loses_no_job(private: Service, own_redis: RedisServer,
                                              kodak_crop: Path) -> None:
    """The running job goes on without the broker; the queued one is in Redis's append-only file.
    Meanwhile jobs are readable, new ones get 503; afterwards new ones are taken again."""
    artifacts = private.data / "artifacts"
    with private.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        behind = submit(client, kodak_crop, steps=5)
        wait_for(client, job["id"], training, "training")
        listed = client.get("/v1/jobs").json()["total"]
        own_redis.stop()
        try:
            assert client.get(job["urls"]["self"]).status_code == 200
            assert_problem(create_job(client, kodak_crop, steps=5), 503, "broker_unavailable")
            assert client.get("/v1/jobs").json()["total"] == listed  # the refused one is not
            ready = assert_problem(client.get("/readyz"), 503, "not_ready")
            assert ready["checks"]["broker"] != "ok" and ready["checks"]["database"] == "ok"
        finally:
            own_redis.start()
        after = submit(client, kodak_crop, steps=5)
        for each in (job, behind, after):
            assert_succeeded(client, artifacts, each)


def test_a_queued_job_whose_message_a_bare_redis_restart_lost_runs(
        private: Service, own_redis: RedisServer, kodak_crop: Path) -> None:
    """Redis restarted without its append-only file: the queued job's message is gone. The API
    sees fewer messages than jobs queued for over NEXP_STALE_AFTER_S and publishes it again."""
    with private.client() as client:
        stop(private.processes["worker"])  # nobody takes the message before Redis loses it
        job = submit(client, kodak_crop, steps=5)
        own_redis.stop()
        own_redis.forget()
        own_redis.start()
        republished = private.logs_from_now("api", b"missing from the broker: " + job["id"].encode())
        private.start_worker()
        assert_succeeded(client, private.data / "artifacts", job)
        assert republished(), private.logs()


def test_an_api_restart_while_jobs_run_loses_nothing(private: Service, kodak_crop: Path) -> None:
    artifacts = private.data / "artifacts"
    with private.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        behind = submit(client, kodak_crop, steps=5)
        wait_for(client, job["id"], training, "training")
    stop(private.processes["api"])  # SIGTERM: uvicorn's graceful stop
    private.start_api()
    with private.client() as client:
        for each in (job, behind):
            assert_succeeded(client, artifacts, each)


# --- the database away for a while ------------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[TcpProxy, str]]:
    """The machine's PostgreSQL behind a proxy the test can cut, and a schema of the module's
    own on it: (proxy, the service's URL through the proxy)."""
    direct = server_url()
    url = make_url(direct)
    with scratch_schema(direct) as schema, \
            TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port,
                          query={"options": f"-csearch_path={schema}"})
        yield proxy, through.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def on_proxied_db(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path,
                  database: tuple[TcpProxy, str], own_redis: RedisServer) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("proxied-db")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=own_redis.url,
                      NEXP_DATABASE_URL=database[1])
    yield from started(Service(data, env))


def test_a_database_outage_gets_503_and_the_service_recovers_by_itself(
        on_proxied_db: Service, database: tuple[TcpProxy, str], kodak_crop: Path) -> None:
    proxy = database[0]
    with on_proxied_db.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        wait_for(client, job["id"], training, "training")
        proxy.cut()
        try:
            away = client.get(job["urls"]["self"])
            assert_problem(away, 503, "database_unavailable")
            assert int(away.headers["retry-after"]) > 0
            assert_problem(create_job(client, kodak_crop, steps=5), 503, "database_unavailable")
            ready = assert_problem(client.get("/readyz"), 503, "not_ready")
            assert ready["checks"]["database"] != "ok" and ready["checks"]["broker"] == "ok"
            assert client.get("/healthz").status_code == 200
        finally:
            proxy.restore()
        assert client.get(job["urls"]["self"]).status_code == 200  # no restart needed
        assert client.get("/readyz").status_code == 200
        assert_succeeded(client, on_proxied_db.data / "artifacts", job)


def test_a_fit_that_ends_while_the_database_is_away_keeps_its_result(
        on_proxied_db: Service, database: tuple[TcpProxy, str], kodak_crop: Path) -> None:
    """The worker writes the outcome once the database is back: the job is not fitted again."""
    proxy = database[0]
    artifacts = on_proxied_db.data / "artifacts"
    with on_proxied_db.client() as client:
        job = submit(client, kodak_crop, steps=30)
        wait_for(client, job["id"], training, "training")
        proxy.cut()
        try:
            # The checkpoint is stored before the outcome is written: the fit is over.
            on_proxied_db.wait_until(
                lambda: f"model/{WEIGHTS}" in stored(artifacts, job["id"]), "the checkpoint",
                timeout=SETTLE_S)
            time.sleep(2)  # a few failed writes
        finally:
            proxy.restore()
        assert_succeeded(client, artifacts, job, attempts=1)


# --- artifact storage full or read-only --------------------------------------------------------

# Room for inputs (a few kB) but not for a checkpoint (the 32 x 32 image's weights: ~1.5 MB).
STORE_BYTES = 256 << 10


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real file system for the artifacts, mounted for the module: a tmpfs of STORE_BYTES."""
    with tmpfs(tmp_path_factory.mktemp("store") / "artifacts", STORE_BYTES) as folder:
        yield folder


@pytest.fixture(scope="module")
def on_small_store(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path,
                   small_store: Path, own_redis: RedisServer) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("small-store")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=own_redis.url,
                      NEXP_STORAGE_DIR=str(small_store))
    yield from started(Service(data, env))


def test_a_full_store_fails_the_job_with_storage_error_and_keeps_no_partial_checkpoint(
        on_small_store: Service, small_store: Path, kodak_crop: Path) -> None:
    """The config and metrics fit on the tmpfs, the weights do not (ENOSPC): the parts already
    stored are removed again, and no temporary file is left behind."""
    with on_small_store.client() as client:
        job = submit(client, kodak_crop, steps=5)
        assert_failed(client, small_store, job, "storage_error")
        detail = client.get(job["urls"]["self"]).json()["error"]["detail"]
        assert "No space left on device" in detail, detail


def test_a_read_only_store_refuses_uploads_and_fails_the_running_job(
        on_small_store: Service, small_store: Path, kodak_crop: Path) -> None:
    """The store turns read-only mid-fit (EROFS): the job fails `storage_error`, new uploads
    get 503 with nothing kept, /readyz says why; writable again, the service takes jobs."""
    with on_small_store.client() as client:
        job = submit(client, kodak_crop, steps=STEPS)
        wait_for(client, job["id"], training, "training")
        before = {p for p in small_store.rglob("*")}
        remount(small_store, "ro")
        try:
            assert_failed(client, small_store, job, "storage_error")
            refused = assert_problem(create_job(client, kodak_crop, steps=5), 503,
                                     "storage_unavailable")
            assert "Read-only file system" in refused["detail"], refused
            ready = assert_problem(client.get("/readyz"), 503, "not_ready")
            assert ready["checks"]["storage"] != "ok"
            assert {p for p in small_store.rglob("*")} == before
        finally:
            remount(small_store, "rw")
        assert client.get("/readyz").status_code == 200
        # Taken again; it fails as the first test's job did, the store being still small.
        assert_failed(client, small_store, submit(client, kodak_crop, steps=5), "storage_error")


# --- a fit that diverges -----------------------------------------------------------------------


def test_a_fit_that_diverges_fails_with_diverged_and_stores_no_checkpoint(
        client: httpx.Client, service: Service, kodak_crop: Path) -> None:
    """An absurd learning rate (the API takes any positive lr, as the CLI does) sends the loss
    to NaN within the first report interval."""
    job = submit(client, kodak_crop, steps=50, lr=1e6)
    assert_failed(client, service.data / "artifacts", job, "diverged")
    done = client.get(job["urls"]["self"]).json()
    assert "nan" in done["error"]["detail"] or "inf" in done["error"]["detail"], done

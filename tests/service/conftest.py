"""A real service for the suite: uvicorn + a Celery worker subprocess on Redis (DB 5).

Caps are set low so the bad-input tests need only small files, and the pretraining cache is
the session's one (tests/conftest.py), so each signal shape pretrains once per run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from service.context import Context
from service.settings import Settings
from tests.utils.jobs import context as job_context
from tests.utils.s3 import moto_server
from tests.utils.service import Service, started
from tests.utils.signals import SDF_LOAD

REDIS = "redis://127.0.0.1:6379"
CAPS = {
    "NEXP_MAX_UPLOAD_BYTES": str(1 << 20),
    "NEXP_MAX_IMAGE_PIXELS": str(512 * 512),
    "NEXP_MAX_AUDIO_SECONDS": "1",
    "NEXP_MAX_RENDER_PIXELS": str(256 * 256),
    "NEXP_MAX_MESH_RESOLUTION": "32",
    "NEXP_MAX_STEPS": "5000",
}


def redis_db(db: int) -> str:
    """The URL of a Redis database, once Redis answers. Services on one database stay apart by
    their queues (service_env): other test runs on this machine may be using it right now."""
    url = f"{REDIS}/{db}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as e:
        pytest.fail(f"Redis at {REDIS} is not answering ({e}); scripts/ensure-services.sh starts it")
    finally:
        client.close()
    return url


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a moto S3 server process holding one empty bucket (tests.utils.s3)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def service_env(data: Path, pretrain_cache: Path, **overrides: str) -> dict[str, str]:
    return {
        "NEXP_QUEUE": f"nexp.test.{uuid.uuid4().hex}",  # this service's workers, no other's
        "NEXP_DATA_DIR": str(data),
        "NEXP_CACHE_DIR": str(pretrain_cache),
        "NEXP_DEVICE": "cpu",
        "NEXP_TORCH_THREADS": "1",  # 2 cores for the tests, the API and the worker together
        "NEXP_HEARTBEAT_S": "0.2",  # progress and cancels reach the job row quickly
        "NEXP_CANCEL_GRACE_S": "3",  # a cancel not honoured between steps ends the child this soon
        "NEXP_LOAD_OPTIONS": json.dumps({"sdf": SDF_LOAD}),
        **CAPS,
        **overrides,
    }



@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("service")
    yield from started(Service(data, service_env(data, pretrain_cache,
                                                 NEXP_BROKER_URL=redis_db(5))))


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client



@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    """A worker context on a fresh SQLite database and artifact folder."""
    context = job_context(Settings(data_dir=tmp_path, heartbeat_s=0.05, cancel_grace_s=0.3))
    yield context
    context.engine.dispose()

"""A real service (uvicorn + a Celery worker, as tests/service) for the client and its webhooks:
webhooks allowed to this machine's receivers, retried within a second, timed out in one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nexp_client import Client

from tests.service.conftest import redis_db, service_env
from tests.utils.service import Service, started
from tests.utils.webhooks import SECRET

WEBHOOKS = {
    "NEXP_WEBHOOK_SECRET": SECRET,
    "NEXP_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on 127.0.0.1
    "NEXP_WEBHOOK_TIMEOUT_S": "1",
    "NEXP_WEBHOOK_RETRY_S": "0.3",
    "NEXP_WEBHOOK_POLL_S": "0.1",
}


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("client-service")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(5), **WEBHOOKS)
    yield from started(Service(data, env))


@pytest.fixture
def nexp(live: Service) -> Iterator[Client]:
    with Client(live.url) as client:
        yield client

"""The app in this process (ASGI through Starlette's TestClient, lifespan included), for tests
that need settings of their own but no worker: a job they create stays queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

from api.main import create_app
from service import keys
from service.settings import Settings, get_settings
from tests.utils.jobs import context


def settings(data: Path, **fields: Any) -> Settings:
    """A service on `data`, with a queue of its own (other test runs may share Redis)."""
    return Settings(data_dir=data, queue=f"nexp.test.{uuid.uuid4().hex}", device="cpu", **fields)


@contextmanager
def serve(config: Settings) -> Iterator[TestClient]:
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: config
    try:
        with TestClient(app, base_url="http://localhost") as client:  # a loopback Host (api.auth)
            yield client
    finally:
        if config.broker_url.startswith("redis://"):
            forget(config)


def forget(config: Settings) -> None:
    """Drop the service's queue and quota counters from the Redis other test runs share."""
    client = redis.Redis.from_url(config.broker_url, socket_connect_timeout=2)
    try:
        # The queue, kombu's bindings of it and the quota counters all carry its unique name.
        stale = list(client.scan_iter(f"*{config.queue}*"))
        if stale:
            client.delete(*stale)
    except redis.ConnectionError:
        pass  # a test of Redis being away: nothing was left there
    finally:
        client.close()


def api_key(config: Settings, name: str) -> str:
    """A new key's token, made in the service's database as `nexp keys create` does."""
    ctx = context(config)
    try:
        with ctx.sessions() as session:
            return keys.create(session, name)[1]
    finally:
        ctx.engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

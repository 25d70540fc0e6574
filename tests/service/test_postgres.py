"""The same service on the machine's PostgreSQL (127.0.0.1:5432, database `test`): only the
database URL changes. Tables go into a schema of their own, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy

from tests.service.conftest import redis_db, service_env
from tests.utils.service import Service, started, submit, wait_status

SERVER = "postgresql+psycopg://{user}@127.0.0.1:5432/test"


def server_url() -> str:
    """The first of the machine's trust-auth users that can connect."""
    errors = []
    for user in ("postgres", "root"):
        engine = sqlalchemy.create_engine(SERVER.format(user=user))
        try:
            with engine.connect():
                return SERVER.format(user=user)
        except sqlalchemy.exc.OperationalError as e:
            errors.append(str(e).splitlines()[0])
        finally:
            engine.dispose()
    pytest.fail(f"PostgreSQL at 127.0.0.1:5432/test refused every user: {errors}; "
                "scripts/ensure-services.sh starts it")


@contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A schema of its own on the server at `url` (its name), dropped with everything in it."""
    schema = f"nexp_test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="module")
def schema_url() -> Iterator[str]:
    url = server_url()
    with scratch_schema(url) as schema:
        yield f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path,
                schema_url: str) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("postgres")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(7),
                      NEXP_DATABASE_URL=schema_url)
    yield from started(Service(data, env))


def test_jobs_live_in_postgresql(on_postgres: Service, schema_url: str,
                                 kodak_crop: Path) -> None:
    with on_postgres.client() as client:
        job = submit(client, kodak_crop, steps=5)
        done = wait_status(client, job["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        assert client.get(done["urls"]["reconstruction"]).status_code == 200
        assert client.get("/readyz").json()["checks"]["database"] == "ok"
    engine = sqlalchemy.create_engine(schema_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sqlalchemy.text("SELECT status, attempts FROM jobs WHERE id = :id"),
                               {"id": job["id"]}).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("succeeded", 1)
    assert not (on_postgres.data / "jobs.sqlite3").exists()

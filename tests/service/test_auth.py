"""API keys over real HTTP: uvicorn on Redis (DB 9), keys in its database, no worker (jobs wait
queued, which is all these tests need)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from api.__main__ import bind_refusal
from service import keys
from service.settings import Settings
from tests.service.conftest import redis_db, service_env
from tests.utils.jobs import context
from tests.utils.service import REPO, Service, assert_problem, create_job, submit


@dataclass(frozen=True)
class Keyed:
    service: Service
    a: str
    b: str
    revoked: str

    def client(self, token: str | None) -> httpx.Client:
        client = self.service.client()
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return client


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Keyed]:
    data = tmp_path_factory.mktemp("auth")
    ctx = context(Settings(data_dir=data))
    with ctx.sessions() as session:
        a, b, revoked = (keys.create(session, name)[1] for name in ("a", "b", "gone"))
        keys.revoke(session, revoked.split("_")[1])
    ctx.engine.dispose()
    service = Service(data, service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(9)))
    try:
        service.start_api()
        yield Keyed(service, a, b, revoked)
    finally:
        service.stop_all()


def test_without_a_key_every_v1_route_is_401_and_the_rest_stays_open(keyed: Keyed,
                                                                    kodak_crop: Path) -> None:
    with keyed.client(None) as anonymous:
        for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("DELETE", "/v1/jobs/x"),
                             ("GET", "/v1/jobs/x/reconstruction"), ("POST", "/v1/jobs/x/query")]:
            answer = anonymous.request(method, path)
            assert_problem(answer, 401, "missing_api_key")
            assert answer.headers["www-authenticate"].startswith("Bearer")
        # An upload is refused before its body is read (api.auth), not after spooling it.
        assert_problem(create_job(anonymous, kodak_crop), 401, "missing_api_key")
        for path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path


@pytest.mark.parametrize("header", [
    "Bearer nonsense",
    "Bearer nexp_000000000000_" + "A" * 43,  # the right shape, no such key
    "Basic YTpi",
])
def test_a_bad_key_is_401(keyed: Keyed, header: str) -> None:
    with keyed.client(None) as client:
        assert_problem(client.get("/v1/jobs", headers={"Authorization": header}), 401,
                       "invalid_api_key")


def test_a_revoked_key_is_401_and_a_forged_secret_too(keyed: Keyed) -> None:
    with keyed.client(keyed.revoked) as client:
        assert "revoked" in assert_problem(client.get("/v1/jobs"), 401, "invalid_api_key")["detail"]
    forged = keyed.a[:-4] + ("AAAA" if not keyed.a.endswith("AAAA") else "BBBB")
    with keyed.client(forged) as client:
        assert_problem(client.get("/v1/jobs"), 401, "invalid_api_key")


def test_a_job_is_its_keys_alone(keyed: Keyed, kodak_crop: Path) -> None:
    with keyed.client(keyed.a) as a, keyed.client(keyed.b) as b:
        job = submit(a, kodak_crop, steps=5)
        assert keyed.service.row(job["id"]).owner == keyed.a.split("_")[1]
        urls = job["urls"]
        for method, url in [("GET", urls["self"]), ("GET", urls["events"]),
                            ("GET", urls["reconstruction"]), ("GET", urls["experts"]),
                            ("GET", urls["metrics"]), ("GET", urls["weights"]), ("GET", urls["input"]),
                            ("POST", urls["cancel"]), ("DELETE", urls["self"])]:
            assert_problem(b.request(method, url), 404, "job_not_found")
        assert_problem(b.post(urls["query"], json={"coords": [[0.0, 0.0]]}), 404, "job_not_found")
        assert job["id"] not in [j["id"] for j in b.get("/v1/jobs").json()["items"]]

        # Untouched by B's tries: still queued, and A sees it (its outputs exist once trained).
        assert a.get(urls["self"]).json()["status"] == "queued"
        assert job["id"] in [j["id"] for j in a.get("/v1/jobs").json()["items"]]
        assert_problem(a.get(urls["reconstruction"]), 409, "job_not_ready")


def test_idempotency_keys_belong_to_one_api_key(keyed: Keyed, kodak_crop: Path) -> None:
    headers = {"Idempotency-Key": "upload-1"}
    with keyed.client(keyed.a) as a, keyed.client(keyed.b) as b:
        first = create_job(a, kodak_crop, headers=headers).json()
        theirs = create_job(b, kodak_crop, headers=headers).json()
        again = create_job(a, kodak_crop, headers=headers).json()
    assert theirs["id"] != first["id"] and again["id"] == first["id"]


def test_tokens_are_stored_only_as_hashes(keyed: Keyed) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{keyed.service.data / 'jobs.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT * FROM api_keys")).mappings().all()
    finally:
        engine.dispose()
    stored = " ".join(str(value) for row in rows for value in row.values())
    for token in (keyed.a, keyed.b, keyed.revoked):
        assert token not in stored and token.split("_", 2)[2] not in stored  # nor the secret
        assert hashlib.sha256(token.encode()).hexdigest() in stored


@pytest.mark.parametrize(("host", "auth", "refused"), [
    ("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False),
    ("0.0.0.0", False, True), ("192.168.1.5", False, True), ("example.org", False, True),
    ("0.0.0.0", True, False),
])
def test_without_keys_only_loopback_is_served(host: str, auth: bool, refused: bool) -> None:
    assert (bind_refusal(host, auth) is not None) == refused


def test_the_launcher_refuses_an_open_bind_without_keys(tmp_path: Path) -> None:
    env = {**os.environ, "NEXP_DATA_DIR": str(tmp_path), "NEXP_HOST": "0.0.0.0"}
    run = subprocess.run([sys.executable, "-m", "api"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "refusing to listen on 0.0.0.0 (NEXP_HOST) without API keys" in run.stderr
    assert "nexp keys create" in run.stderr

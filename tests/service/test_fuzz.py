"""Requests generated from the OpenAPI schema (schemathesis) against a real uvicorn server.

Every operation gets schemathesis' coverage cases (boundaries, wrong types, missing fields) and
a bounded number of generated ones. Each answer must be documented (status code, content type,
body schema), never a 5xx, and every error a problem+json with a `code`. Job ids are drawn
from real jobs as well as generated ones (`with_a_real_job`), so the fuzzer reaches renders,
queries and cancels, not only 404s.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.errors import PROBLEM_JSON
from api.main import app
from tests.service.conftest import CAPS, redis_db, service_env
from tests.utils.app import api_key, bearer, settings
from tests.utils.data import SPOT
from tests.utils.service import Service, started, submit, wait_status
from tests.utils.signals import SDF_LOAD, seed_pretraining

# Per operation: ~15 operations x 20 examples, plus the coverage cases, is about a minute on
# the 2 shared cores; derandomized so a failure reproduces on the next run.
FUZZ = hypothesis.settings(max_examples=20, deadline=None, derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Operations that change or end a job get ids of their own, so they cannot take the finished
# jobs away from the render operations that run after them.
DESTRUCTIVE = {("DELETE", "/v1/jobs/{job_id}"), ("POST", "/v1/jobs/{job_id}/cancel")}
REQUEST_TIMEOUT_S = 30  # a render on a busy core; an event stream of a finished job ends at once
OPEN_STREAMS = 20  # more than SQLAlchemy's default pool: 5 connections and 10 overflow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service of its own: its API key turns auth on, which the shared one must not have.
    Its pretraining cache is its own too, seeded with untrained managers (`jobs`)."""
    data = tmp_path_factory.mktemp("fuzz")
    cache = tmp_path_factory.mktemp("fuzz-pretrain-cache")
    yield from started(Service(data, service_env(data, cache, NEXP_BROKER_URL=redis_db(5))))


@pytest.fixture(scope="module")
def auth(fuzzed: Service) -> dict[str, str]:
    """A key made in the service's database as `nexp keys create` does: auth is on."""
    return bearer(api_key(settings(fuzzed.data), "fuzz"))


@pytest.fixture(scope="module")
def jobs(fuzzed: Service, auth: dict[str, str], kodak_crop: Path, bach: Path) -> dict[str, str]:
    """Real job ids: a succeeded job of each kind (renders, queries), a canceled one (outputs
    that do not exist: 409), and another canceled one the destructive operations may delete."""
    signals = {"image": (kodak_crop, {}), "audio": (bach, {}),
               "sdf": (SPOT, SDF_LOAD)}
    for path, load_options in signals.values():  # real pretraining takes minutes on 2 cores
        seed_pretraining(Path(fuzzed.env["NEXP_CACHE_DIR"]), path, **load_options)
    with fuzzed.client() as client:
        client.headers.update(auth)
        ids = {kind: submit(client, path, steps=2)["id"] for kind, (path, _) in signals.items()}
        for job_id in ids.values():
            assert wait_status(client, job_id, "succeeded", "failed")["status"] == "succeeded"
        for name in ("canceled", "victim"):
            ids[name] = submit(client, kodak_crop, steps=5000)["id"]
            client.post(f"/v1/jobs/{ids[name]}/cancel")
            wait_status(client, ids[name], "canceled", timeout=60)
    return ids


def with_a_real_job(case: Case[Any], jobs: dict[str, str]) -> None:
    """Keep the generated job id (a 404) or swap in a real job's, chosen by the generated id,
    so the choice is part of what hypothesis generates and a failure replays."""
    job_id = case.path_parameters.get("job_id") if case.path_parameters else None
    if job_id is None:
        return
    if (case.operation.method.upper(), case.operation.path) in DESTRUCTIVE:
        pool = [job_id, jobs["victim"]]
    else:
        pool = [job_id, jobs["image"], jobs["audio"], jobs["sdf"], jobs["canceled"]]
    case.path_parameters["job_id"] = pool[zlib.crc32(str(job_id).encode()) % len(pool)]


def errors_are_problems(ctx: CheckContext, response: Response, case: Case[Any]) -> bool:
    """api.errors: every 4xx and 5xx is application/problem+json with a machine `code`."""
    if response.status_code < 400:
        return True
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM_JSON, f"{response.status_code} answered as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and body.get("code"), f"no `code` in {body!r}"
    assert body.get("status") == response.status_code, body
    return True


# The schema the server serves, built at collection time: the server exists only in a fixture.
schema = schemathesis.openapi.from_dict(app.openapi())


@schema.parametrize()
@FUZZ
def test_every_answer_is_documented_and_no_5xx(case: Case[Any], fuzzed: Service, auth: dict[str, str],
                                               jobs: dict[str, str]) -> None:
    with_a_real_job(case, jobs)
    case.call_and_validate(
        base_url=fuzzed.url, headers=auth, timeout=REQUEST_TIMEOUT_S,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance, errors_are_problems],
    )


def test_a_mesh_without_a_resolution_is_rendered_at_the_cap(fuzzed: Service, auth: dict[str, str],
                                                           jobs: dict[str, str]) -> None:
    """Found by the fuzzer: without `resolution` the renderer's default 256^3 grid ran whatever
    NEXP_MAX_MESH_RESOLUTION said, minutes of a core per request."""
    with fuzzed.client() as client:
        client.headers.update(auth)
        url = f"/v1/jobs/{jobs['sdf']}/mesh"
        unasked = client.get(url, timeout=REQUEST_TIMEOUT_S)
        assert unasked.status_code == 200, unasked.text
        cap = int(CAPS["NEXP_MAX_MESH_RESOLUTION"])
        assert unasked.content == client.get(url, params={"resolution": cap}).content


def test_open_event_streams_leave_the_api_answering(fuzzed: Service, auth: dict[str, str],
                                                    kodak_crop: Path) -> None:
    """Found by the fuzzer (slow renders): a request held a pooled database connection for as
    long as it lasted, so 15 open event streams or waiting renders (SQLAlchemy's default pool)
    made every other request wait 30 s for a connection and fail with a 500."""
    with fuzzed.client() as client:
        client.headers.update(auth)
        job = submit(client, kodak_crop, steps=5000)
        try:
            with ExitStack() as streams:
                for _ in range(OPEN_STREAMS):
                    stream = streams.enter_context(client.stream("GET", job["urls"]["events"]))
                    assert stream.status_code == 200
                assert client.get("/v1/jobs", timeout=10).status_code == 200
        finally:
            client.post(job["urls"]["cancel"])
        wait_status(client, job["id"], "canceled", timeout=60)

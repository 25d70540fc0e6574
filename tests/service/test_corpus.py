"""Every malformed file of tests/utils/corpus, uploaded over real HTTP: a 4xx problem with its
code, never a 5xx, and nothing left behind (no job, no stored artifact, no spooled upload)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.corpus import CORPUS
from tests.utils.service import Service, assert_problem, create_job


def leftovers(client: httpx.Client, service: Service) -> tuple[int, set[Path], list[Path]]:
    """Jobs listed, artifact folders stored, uploads still spooled."""
    artifacts = service.data / "artifacts" / "jobs"
    return (client.get("/v1/jobs").json()["total"],
            set(artifacts.iterdir()) if artifacts.exists() else set(),
            sorted((service.data / "tmp").glob("upload-*")))


@pytest.fixture
def leaves_nothing(client: httpx.Client, service: Service) -> Iterator[None]:
    before = leftovers(client, service)
    yield
    assert leftovers(client, service) == before


@pytest.mark.usefixtures("leaves_nothing")
@pytest.mark.parametrize("name", CORPUS)
def test_the_upload_is_refused_with_its_code(client: httpx.Client, service: Service,
                                             tmp_path: Path, name: str) -> None:
    bad = CORPUS[name]
    body = assert_problem(create_job(client, bad.write(tmp_path)), bad.status, bad.code)
    assert body["instance"] == "/v1/jobs"
    # The detail names the client's file, never a path on the server.
    assert str(service.data) not in body["detail"] and "/tmp/" not in body["detail"]

"""service.storage.S3Storage against a real S3-protocol server (moto's, in a subprocess), and the
whole service (API + worker, Redis DB 9) with its artifacts there instead of in a folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from service import storage as storage_module
from service.settings import Settings
from service.storage import ArtifactNotFound, LocalStorage, S3Storage, make_storage, s3_client
from tests.service.conftest import redis_db, service_env
from tests.service.test_storage import Broken
from tests.utils.service import START_TIMEOUT_S, Service, free_port, started, stop, submit, wait_status

BUCKET = "nexp-test"
# moto accepts any credentials; they only have to exist for botocore to sign requests.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}


def wait_for_server(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"the moto S3 server at {url} did not answer (exit code {server.poll()})")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a moto S3 server process holding one empty bucket."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in AWS_ENV.items():
                env.setenv(name, value)
            wait_for_server(server, url)
            s3_client(url).create_bucket(Bucket=BUCKET)
            yield url
    finally:
        stop(server)
        log.close()


@pytest.fixture
def s3(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server, to look at the bucket directly."""
    return s3_client(endpoint)


@pytest.fixture
def storage(s3: Any) -> S3Storage:
    """A store under a prefix of its own, so tests never see each other's objects."""
    return S3Storage(BUCKET, f"t/{uuid.uuid4().hex}", s3)


def keys(s3: Any, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_bytes_and_streams_round_trip(storage: S3Storage, s3: Any) -> None:
    storage.put("jobs/a/input.png", b"png bytes")
    storage.put("jobs/a/model/weights", io.BytesIO(b"w" * 3_000_000))
    assert storage.get("jobs/a/input.png") == b"png bytes"
    with storage.open("jobs/a/model/weights") as f:
        assert len(f.read()) == 3_000_000
    assert storage.exists("jobs/a/input.png") and not storage.exists("jobs/a/other")
    for read in (storage.get, storage.open):
        with pytest.raises(ArtifactNotFound):
            read("jobs/a/other")
    assert keys(s3, storage.prefix) == [storage.prefix + "jobs/a/input.png",
                                            storage.prefix + "jobs/a/model/weights"]


def test_a_failed_upload_leaves_the_previous_version(storage: S3Storage) -> None:
    storage.put("jobs/a/config.json", b"old")
    with pytest.raises(OSError, match="connection lost"):
        storage.put("jobs/a/config.json", io.BufferedReader(Broken()))
    assert storage.get("jobs/a/config.json") == b"old"


class BrokenLarge(io.RawIOBase):
    """A stream that fails after one multipart part's worth of bytes."""

    def __init__(self) -> None:
        self.left = storage_module.MULTIPART_BYTES + 1

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("connection lost")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_a_failed_multipart_upload_leaves_nothing(storage: S3Storage, s3: Any) -> None:
    with pytest.raises(OSError, match="connection lost"):
        storage.put("jobs/a/model.safetensors", io.BufferedReader(BrokenLarge()))
    assert not storage.exists("jobs/a/model.safetensors")
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=storage.prefix)
    assert not uploads.get("Uploads"), "the failed upload's parts were not aborted"


def test_delete_takes_a_folder_prefix_or_one_key_page_by_page(
        storage: S3Storage, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "DELETE_BATCH", 2)  # several list + delete rounds
    folder = [f"jobs/a/model/{i}" for i in range(5)]
    for key in [*folder, "jobs/a/input.png", "jobs/ab/input.png", "jobs/b/input.png"]:
        storage.put(key, b"x")
    storage.delete("jobs/a/")
    storage.delete("jobs/b/input.png")
    storage.delete("jobs/missing/")  # absent: nothing to do
    assert keys(s3, storage.prefix) == [storage.prefix + "jobs/ab/input.png"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "jobs/../../escape", ".."])
def test_keys_cannot_leave_the_prefix(storage: S3Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        storage.put(key, b"x")


def test_the_storage_url_picks_the_store(endpoint: str, tmp_path: Path) -> None:
    s3 = make_storage(Settings(storage_url=f"s3://{BUCKET}/deep/prefix/", s3_endpoint_url=endpoint))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == (BUCKET, "deep/prefix/")
    s3.put("probe", b"ok")
    assert s3.get("probe") == b"ok"
    local = make_storage(Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "elsewhere"
    default = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(default, LocalStorage) and default.root == tmp_path / "artifacts"


@pytest.mark.parametrize(("url", "message"), [
    ("gs://bucket", "is not s3://bucket/prefix"),
    ("s3:///prefix", "names no bucket"),
    ("file://host/folder", "is not a local folder"),
])
def test_bad_storage_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(storage_url=url)


def test_a_storage_dir_and_url_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both name the artifact store"):
        Settings(storage_dir=tmp_path, storage_url="s3://bucket")


@pytest.fixture(scope="module")
def s3_service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path,
               endpoint: str) -> Iterator[Service]:
    """The service with its artifacts in the bucket under `service/`."""
    data = tmp_path_factory.mktemp("s3-service")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(9),
                      NEXP_STORAGE_URL=f"s3://{BUCKET}/service", NEXP_S3_ENDPOINT_URL=endpoint,
                      **AWS_ENV)
    yield from started(Service(data, env))


def test_a_job_runs_with_its_artifacts_in_the_object_store(
        s3_service: Service, s3: Any, kodak_crop: Path) -> None:
    with s3_service.client() as api:
        assert api.get("/readyz").json()["checks"]["storage"] == "ok"
        job = submit(api, kodak_crop, steps=10)
        done = wait_status(api, job["id"], "succeeded", "failed", "canceled")
        assert done["status"] == "succeeded", done
        prefix = f"service/jobs/{job['id']}/"
        assert keys(s3, prefix) == [prefix + name for name in (
            "input.png", "model/config.json", "model/metrics.json", "model/model.safetensors")]
        png = api.get(done["urls"]["reconstruction"])
        assert png.status_code == 200, png.text
        assert Image.open(io.BytesIO(png.content)).size == (32, 32)
        assert api.get(done["urls"]["weights"]).status_code == 200

        assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert keys(s3, prefix) == []
    # Nothing was written to a local artifact folder on either side.
    assert not (s3_service.data / "artifacts").exists()
    assert os.listdir(s3_service.data / "tmp") == []

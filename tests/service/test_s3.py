"""The whole service (API + worker, Redis DB 9) with its artifacts in an S3-protocol store
(moto's server) instead of a folder, and the settings that pick the store. The store's own
contract, shared with the folder backend, is tests/service/test_storage.py."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from service.settings import Settings
from service.storage import LocalStorage, S3Storage, make_storage, s3_client
from tests.service.conftest import redis_db, service_env
from tests.utils.s3 import AWS_ENV, BUCKET, keys
from tests.utils.service import Service, started, submit, wait_status


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A boto3 S3 client of the moto server, to look at the bucket directly."""
    return s3_client(s3_endpoint)


def test_the_storage_url_picks_the_store(s3_endpoint: str, tmp_path: Path) -> None:
    s3 = make_storage(Settings(storage_url=f"s3://{BUCKET}/deep/prefix/", s3_endpoint_url=s3_endpoint))
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
               s3_endpoint: str) -> Iterator[Service]:
    """The service with its artifacts in the bucket under `service/`."""
    data = tmp_path_factory.mktemp("s3-service")
    env = service_env(data, pretrain_cache, NEXP_BROKER_URL=redis_db(9),
                      NEXP_STORAGE_URL=f"s3://{BUCKET}/service", NEXP_S3_ENDPOINT_URL=s3_endpoint,
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

"""The artifact store's contract, run against both backends: LocalStorage on a folder and
S3Storage on a real S3-protocol server (moto's). All-or-nothing writes that leave no debris,
prefix deletes, and keys kept inside the store."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from service import storage as storage_module
from service.storage import ArtifactNotFound, LocalStorage, S3Storage, Storage, s3_client
from tests.utils.s3 import BUCKET, keys


@dataclass
class Backend:
    store: Storage
    held: Callable[[], list[str]]
    """Every key the backend holds now, as it lists them itself (files, or objects and multipart
    uploads in progress): what a failed write may not leave behind."""


def folder_backend(root: Path) -> Backend:
    def held() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    return Backend(LocalStorage(root), held)


def s3_backend(endpoint: str) -> Backend:
    s3 = s3_client(endpoint)
    store = S3Storage(BUCKET, f"t/{uuid.uuid4().hex}", s3)  # a prefix of its own per test

    def held() -> list[str]:
        uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix).get("Uploads", [])
        return [key.removeprefix(store.prefix)
                for key in [*keys(s3, store.prefix), *(upload["Key"] for upload in uploads)]]

    return Backend(store, held)


@pytest.fixture(params=["folder", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder":
        return folder_backend(tmp_path / "artifacts")
    return s3_backend(request.getfixturevalue("s3_endpoint"))


def test_bytes_and_streams_round_trip(backend: Backend) -> None:
    store = backend.store
    store.put("jobs/a/input.png", b"png bytes")
    store.put("jobs/a/model/weights", io.BytesIO(b"w" * 3_000_000))
    assert store.get("jobs/a/input.png") == b"png bytes"
    with store.open("jobs/a/model/weights") as f:
        assert len(f.read()) == 3_000_000
    assert store.exists("jobs/a/input.png") and not store.exists("jobs/a/other")
    for read in (store.get, store.open):
        with pytest.raises(ArtifactNotFound):
            read("jobs/a/other")
    assert backend.held() == ["jobs/a/input.png", "jobs/a/model/weights"]


class Broken(io.RawIOBase):
    """A stream that fails after `size` bytes, like a client that disconnects."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("connection lost")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


# One chunk, and one byte past a multipart part (S3Storage then uploads in parts).
@pytest.mark.parametrize("size", [1000, storage_module.MULTIPART_BYTES + 1])
def test_a_failed_write_leaves_the_previous_version_and_no_debris(backend: Backend, size: int) -> None:
    backend.store.put("jobs/a/config.json", b"old")
    with pytest.raises(OSError, match="connection lost"):
        backend.store.put("jobs/a/config.json", io.BufferedReader(Broken(size)))
    assert backend.store.get("jobs/a/config.json") == b"old"
    assert backend.held() == ["jobs/a/config.json"]


def test_delete_takes_a_folder_prefix_or_one_key(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "DELETE_BATCH", 2)  # S3: several list + delete rounds
    folder = [f"jobs/a/model/{i}" for i in range(5)]
    for key in [*folder, "jobs/a/input.png", "jobs/ab/input.png", "jobs/b/input.png"]:
        backend.store.put(key, b"x")
    backend.store.delete("jobs/a/")
    backend.store.delete("jobs/b/input.png")
    backend.store.delete("jobs/missing/")  # absent: nothing to do
    assert backend.held() == ["jobs/ab/input.png"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "jobs/../../escape", ".."])
def test_keys_cannot_leave_the_store(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        backend.store.put(key, b"x")

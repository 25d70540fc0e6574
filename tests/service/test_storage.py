"""service.storage.LocalStorage: all-or-nothing writes, prefix deletes, keys kept inside the root."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import ArtifactNotFound, LocalStorage


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "artifacts")


def test_bytes_and_streams_round_trip(storage: LocalStorage) -> None:
    storage.put("jobs/a/input.png", b"png bytes")
    storage.put("jobs/a/model/weights", io.BytesIO(b"w" * 3_000_000))
    assert storage.get("jobs/a/input.png") == b"png bytes"
    with storage.open("jobs/a/model/weights") as f:
        assert len(f.read()) == 3_000_000
    assert storage.exists("jobs/a/input.png") and not storage.exists("jobs/a/other")
    with pytest.raises(ArtifactNotFound):
        storage.get("jobs/a/other")


class Broken(io.RawIOBase):
    """A stream that fails after its first chunk, like a client that disconnects."""

    def __init__(self) -> None:
        self.chunks: Iterator[bytes] = iter([b"x" * 1000])

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = next(self.chunks, None)
        if chunk is None:
            raise OSError("connection lost")
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_failed_write_leaves_the_previous_version_and_no_debris(storage: LocalStorage) -> None:
    storage.put("jobs/a/config.json", b"old")
    with pytest.raises(OSError, match="connection lost"):
        storage.put("jobs/a/config.json", io.BufferedReader(Broken()))
    assert storage.get("jobs/a/config.json") == b"old"
    assert [p.name for p in (storage.root / "jobs" / "a").iterdir()] == ["config.json"]


def test_delete_takes_a_folder_prefix_or_one_key(storage: LocalStorage) -> None:
    for key in ("jobs/a/input.png", "jobs/a/model/w", "jobs/ab/input.png", "jobs/b/input.png"):
        storage.put(key, b"x")
    storage.delete("jobs/a/")
    storage.delete("jobs/b/input.png")
    storage.delete("jobs/missing/")  # absent: nothing to do
    assert not storage.exists("jobs/a/model/w") and not storage.exists("jobs/b/input.png")
    assert storage.exists("jobs/ab/input.png")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "jobs/../../escape", ".."])
def test_keys_cannot_leave_the_root(storage: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        storage.put(key, b"x")

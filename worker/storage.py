"""Artifacts (uploads, checkpoints) behind one small interface.

`LocalStorage` keeps them in a folder; an S3-compatible store can implement the same five
methods when the API and the workers run on different machines. Keys are "/"-separated
relative paths such as "jobs/<id>/input.png".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

COPY_CHUNK = 1 << 20


class ArtifactNotFound(KeyError):
    """No artifact under that key."""


class Storage(Protocol):
    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Store bytes or a readable binary file under `key`, all or nothing."""
        ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, prefix: str) -> None:
        """Remove the artifacts under `prefix` ending in "/", or the one artifact at a key."""
        ...


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def input_key(job_id: str, suffix: str) -> str:
    return f"{job_prefix(job_id)}input{suffix}"


def checkpoint_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}model/"


def checkpoint_key(job_id: str, name: str) -> str:
    """A file of the job's checkpoint folder (model.checkpoint's WEIGHTS, CONFIG, METRICS)."""
    return checkpoint_prefix(job_id) + name


class LocalStorage:
    """A folder. Writes go to a temporary name in the target folder, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts:
            raise ValueError(f"invalid artifact key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f, COPY_CHUNK)
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the bytes do
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as e:
            raise ArtifactNotFound(key) from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if prefix.endswith("/"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

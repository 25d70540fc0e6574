"""Artifacts (uploads, checkpoints) behind one small interface.

`LocalStorage` keeps them in a folder (one machine, the default); `S3Storage` in any
S3-compatible object store (AWS S3, MinIO, Ceph...) when the API and the workers run on
different machines. `make_storage` picks one from NEXP_STORAGE_URL. Keys are "/"-separated
relative paths such as "jobs/<id>/input.png". Nothing here hands out a local path: readers that
need a file (the worker's loaders) copy the artifact into a temporary folder of their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from service.settings import Settings

COPY_CHUNK = 1 << 20


class ArtifactNotFound(KeyError):
    """No artifact under that key."""


def failure_reason(error: Exception) -> str:
    """Why a store refused a write, for a client or a job record: the OS's reason, or the error's
    type (botocore's, boto3's), never its text, which names the server's paths or buckets."""
    return error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__


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


def snapshot_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}snapshot/"


def snapshot_key(job_id: str) -> str:
    """The running fit's latest snapshot (model.snapshot): one object, replaced as a whole."""
    return snapshot_prefix(job_id) + "state.safetensors"


def checked(key: str) -> tuple[str, ...]:
    """The key's parts; a key that could leave the store's root is refused."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or ".." in parts:
        raise ValueError(f"invalid artifact key {key!r}")
    return parts


class LocalStorage:
    """A folder. Writes go to a temporary name in the target folder, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*checked(key))

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


# Objects past this size go up in parts of this size, so a large upload never sits in memory whole.
MULTIPART_BYTES = 8 * COPY_CHUNK
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes (and one listing page holds)
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """Objects under `prefix` in a bucket of an S3-compatible store.

    A write needs no temporary name: an S3 PUT is all or nothing, the object appearing only once
    the whole body arrived (a multipart upload only at CompleteMultipartUpload), so a crash or a
    failed stream leaves the previous version or nothing. boto3 aborts a multipart upload that
    fails; the parts of a process killed mid-upload are invisible and are reclaimed by the
    store (MinIO does so by itself; on AWS, an AbortIncompleteMultipartUpload lifecycle rule).
    """

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket, self.client = bucket, client  # boto3 clients are thread-safe (not sessions)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES,
                                       multipart_chunksize=MULTIPART_BYTES)

    def _key(self, key: str) -> str:
        return self.prefix + "/".join(checked(key))

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        if isinstance(data, bytes):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        else:
            self.client.upload_fileobj(data, self.bucket, self._key(key), Config=self.transfer)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's body, read as it is consumed."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response["Error"]["Code"] in NOT_FOUND:
                raise ArtifactNotFound(key) from e
            raise
        return cast(BinaryIO, answer["Body"])  # botocore's StreamingBody is an io.IOBase

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response["Error"]["Code"] in NOT_FOUND:
                return False
            raise
        return True

    def delete(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(prefix))
            return
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix) + "/",
            PaginationConfig={"PageSize": DELETE_BATCH})
        for page in pages:
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if not objects:
                continue
            answer = self.client.delete_objects(Bucket=self.bucket,
                                                Delete={"Objects": objects, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"{len(answer['Errors'])} artifacts under {prefix!r} were not "
                              f"deleted; first: {first['Key']}: {first['Code']} {first['Message']}")


def s3_client(endpoint_url: str) -> Any:
    """A client for AWS S3, or for the store at `endpoint_url`; credentials and region come from
    the standard AWS variables (or an instance role)."""
    config = Config(
        retries={"mode": "standard"},  # backs off on throttling and 5xx answers
        connect_timeout=5, read_timeout=60,
        # Stores other than AWS are addressed by path (http://minio:9000/bucket/key): their
        # buckets have no DNS names of their own.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # botocore >= 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible stores reject; checksums are still sent where the API requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session of its own: boto3's default session is shared module state and not thread-safe.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


def make_storage(settings: Settings) -> Storage:
    """The store NEXP_STORAGE_URL names; a local folder when it names none."""
    url = urlsplit(settings.storage_url)
    if url.scheme == "s3":
        return S3Storage(url.netloc, url.path, s3_client(settings.s3_endpoint_url))
    return LocalStorage(settings.artifacts_dir)

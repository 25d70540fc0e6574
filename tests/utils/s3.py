"""A real S3-protocol server for tests: moto's, in a subprocess, holding one empty bucket."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.storage import s3_client
from tests.utils.service import START_TIMEOUT_S, free_port, stop

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


@contextmanager
def moto_server(folder: Path) -> Iterator[str]:
    """The address of a moto S3 server process with BUCKET in it, logging to `folder`."""
    port = free_port()
    log = (folder / "moto.log").open("wb")
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


def keys(s3: Any, prefix: str) -> list[str]:
    """The bucket's keys under `prefix`, as the server lists them."""
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))

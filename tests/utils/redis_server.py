"""A redis-server of a test's own, to stop and start again. The machine's Redis on 6379 is
never restarted: other test runs on this machine are using it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.utils.service import free_port, stop

START_TIMEOUT_S = 15


@dataclass
class RedisServer:
    """Persisted as docker-compose runs it (append-only file, here in `folder`), so queued
    messages outlive a restart; no RDB snapshots, which would only add disk writes."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "yes", "--dir", str(self.folder),
                   "--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits, as on a service restart."""
        if self.process is not None:
            stop(self.process, signal.SIGTERM)
            self.process = None

    def forget(self) -> None:
        """Remove the append-only file: the next start is a Redis that kept nothing on disk."""
        assert self.process is None, "stop the server first"
        shutil.rmtree(self.folder / "appendonlydir", ignore_errors=True)

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

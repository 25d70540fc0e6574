"""A whole service of the bench's own: a private redis-server, the API (uvicorn) and N Celery
workers, all subprocesses on a temporary data folder (service.harness, as the test suite's). The
machine's Redis is left alone (other runs share it). Each process logs to a file there, and a
failure quotes the logs.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from service.harness import Harness, free_port

START_TIMEOUT_S = 120  # torch imported by several processes at once on a busy machine


def service_settings(folder: Path, redis_port: int) -> dict[str, str]:
    """NEXP_* for every process of the stack: one data folder, one private queue."""
    return {
        "NEXP_DATA_DIR": str(folder / "data"),
        "NEXP_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "NEXP_QUEUE": f"nexp.bench.{uuid.uuid4().hex}",
        "NEXP_DEVICE": "cpu",
        "NEXP_TORCH_THREADS": "1",  # the processes share the machine's few cores
        # A killed worker's job is requeued this soon; the default (60 s) would outlast a
        # quick soak's drain.
        "NEXP_STALE_AFTER_S": "5",
        "NEXP_HEARTBEAT_S": "0.5",
    }


@dataclass
class Stack:
    folder: Path
    workers: int = 2
    redis_port: int = field(default_factory=free_port)
    harness: Harness = field(init=False)

    def __post_init__(self) -> None:
        self.harness = Harness(self.folder, service_settings(self.folder, self.redis_port),
                               start_timeout_s=START_TIMEOUT_S)

    @property
    def settings(self) -> dict[str, str]:
        return self.harness.env

    @property
    def url(self) -> str:
        return self.harness.url

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("the service benchmarks need redis-server on PATH")
        self.harness.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                                     "127.0.0.1", "--save", "", "--appendonly", "no"])
        for index in range(self.workers):
            self.start_worker(index)
        self.harness.start_api("--log-level", "warning")

    def start_worker(self, index: int) -> None:
        self.harness.start_worker(f"worker{index}")

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker and its pool child, with no warning: a crashed machine."""
        self.harness.kill(f"worker{index}")

    def stop(self) -> None:
        self.harness.stop_all()  # workers first, cold; the API; Redis last

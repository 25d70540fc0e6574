"""A whole service of the bench's own: a private redis-server, the API (uvicorn) and N Celery
workers, all subprocesses on a temporary data folder. The machine's Redis is left alone (other
runs share it). Each process logs to a file there; `tail` quotes them when something breaks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.utils.service import free_port, stop  # the test services stop their processes alike

REPO = Path(__file__).resolve().parents[1]
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
    port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = service_settings(self.folder, self.redis_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("the service benchmarks need redis-server on PATH")
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no"])
        for index in range(self.workers):
            self.start_worker(index)
        self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host",
                           "127.0.0.1", "--port", str(self.port), "--log-level", "warning"])
        self.wait_until(self.api_answers, "the API to answer /healthz")

    def spawn(self, name: str, command: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **self.settings}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)  # a group of its own to kill

    def start_worker(self, index: int) -> None:
        name = f"worker{index}"
        log = self.folder / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        self.spawn(name, [sys.executable, "-m", "celery", "-q", "-A", "worker.celery_app",
                          "worker", "--loglevel=INFO", "--without-gossip", "--without-mingle",
                          "-n", f"{name}@%h"])
        self.wait_until(lambda: b" ready." in log.read_bytes()[start:], f"{name} to be ready")

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker and its pool child, with no warning: a crashed machine."""
        process = self.processes[f"worker{index}"]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def api_answers(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not done():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) while waiting "
                                       f"for {what}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        """Workers first, cold (SIGQUIT: a warm stop would wait for fits to end); Redis last."""
        for name in sorted(self.processes, key=lambda n: (n == "redis", n == "api")):
            stop(self.processes[name], signal.SIGQUIT if name.startswith("worker") else signal.SIGTERM)

"""The service as subprocesses: the API (uvicorn) and Celery workers on one data folder, each
logging to a file there, started as an operator starts them (`uvicorn api.main:app`, `celery -A
worker.celery_app worker`).

The one harness of the test suite (tests.utils.service) and the benchmarks (bench.stack). It
lives in the service package, which both already import, so that neither tests/ nor bench/
depends on the other; nothing in the service imports it. Every process starts in a session of
its own, so a worker dies with its pool children and a stop never leaves one behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90  # importing torch in several processes at once on a busy 2-core machine
STOP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the process, then kill its whole session if it has not exited in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # pool children that outlived their parent
    except ProcessLookupError:
        pass
    process.wait()


def is_worker(name: str) -> bool:
    return name.startswith("worker")


@dataclass
class Harness:
    """Service processes on `data`, configured by `env` (NEXP_* variables), logs beside it."""

    data: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    start_timeout_s: float = START_TIMEOUT_S

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        self.data.mkdir(parents=True, exist_ok=True)
        log = (self.data / f"{name}.log").open("ab")
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **self.env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def start_api(self, *uvicorn_options: str) -> None:
        self.spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                           "--port", str(self.port), *uvicorn_options])
        self.wait_until(lambda: self.answers("/healthz"), "the API to answer /healthz")

    def start_worker(self, name: str = "worker") -> None:
        """A Celery worker named `name` (worker, worker1...: the names tell workers apart)."""
        ready = self.logs_from_now(name, b" ready.")
        # -q: no start-up banner on stdout, so every line the worker writes is a JSON log line.
        self.spawn(name, [sys.executable, "-m", "celery", "-q", "-A", "worker.celery_app", "worker",
                          "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", f"{name}@%h"])
        self.wait_until(ready, f"{name} to be ready")

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children, with no warning: a crashed machine."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def logs_from_now(self, name: str, marker: bytes) -> Callable[[], bool]:
        """A check that process `name` has logged `marker` since this call."""
        log = self.data / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        return lambda: log.exists() and marker in log.read_bytes()[start:]

    def stop_all(self) -> None:
        """Workers first, cold (SIGQUIT: a warm stop would wait for their fits to end); then the
        others, the last started first (the API before the broker it uses)."""
        names = list(self.processes)
        for name in [*filter(is_worker, names), *reversed([n for n in names if not is_worker(n)])]:
            stop(self.processes[name], signal.SIGQUIT if is_worker(name) else signal.SIGTERM)

    def answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Until `done()`; fails at once, quoting the logs, when a process exits meanwhile."""
        limit = self.start_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if done():
                return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.fail(f"{name} exited with {process.returncode} while waiting for "
                              f"{what}\n{self.logs()}")
            time.sleep(0.2)
        self.fail(f"timed out after {limit} s waiting for {what}\n{self.logs()}")

    def fail(self, message: str) -> NoReturn:
        """How a harness gives up; the test suite's fails the test instead."""
        raise RuntimeError(message)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.data.glob("*.log")))

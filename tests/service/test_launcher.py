"""`python -m api` leaves no worker behind, however it ends (api/__main__.py, worker.launcher_watch).

The worker leads a process group of its own (its session), with its pool child: "no worker left"
means no live process in that group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.conftest import service_env
from tests.service.test_embedded import children, launch
from tests.utils.service import Service, free_port
from worker.launcher_watch import CHECK_INTERVAL_S, COLD_SHUTDOWN_GRACE_S

GONE_TIMEOUT_S = 15
# An orphan's own cold shutdown takes seconds (Celery's; about 8 on a busy 2-core machine); the
# watch kills it after its grace.
ORPHAN_TIMEOUT_S = CHECK_INTERVAL_S + COLD_SHUTDOWN_GRACE_S + 5


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command's closing parenthesis: state, ppid, pgrp.
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
        if int(pgrp) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_gone(pgid: int, timeout: float = GONE_TIMEOUT_S) -> list[int]:
    """The group's live members after up to `timeout` s: none, once it has ended."""
    deadline = time.monotonic() + timeout
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return members


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pending(pid: int, sig: signal.Signals) -> bool:
    """Whether `sig` was sent to process `pid` and waits for it (a stopped process's do)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(status.split("ShdPnd:")[1].split()[0], 16)
    return bool(mask & 1 << (sig - 1))


@dataclass
class Launched:
    service: Service
    launcher: subprocess.Popen[bytes]
    worker: int  # its pid, which is also its process group's id


@pytest.fixture
def launched(tmp_path: Path, pretrain_cache: Path) -> Iterator[Launched]:
    """The launcher, ready, and its worker; afterwards neither is left, nor a pool child."""
    port = free_port()
    service = Service(tmp_path, {**service_env(tmp_path, pretrain_cache), "PORT": str(port)},
                      port)
    worker: int | None = None
    try:
        launcher = launch(service)
        worker, = children(launcher.pid)
        assert len(group_members(worker)) == 2, "the worker leads no group with its pool child"
        yield Launched(service, launcher, worker)
    finally:
        service.stop_all()
        if worker is not None:
            kill_group(worker)


def test_a_killed_launcher_takes_its_worker_along(launched: Launched) -> None:
    launched.launcher.kill()  # an OOM kill, `docker kill`: the launcher stops nothing
    launched.launcher.wait()
    assert not wait_gone(launched.worker, ORPHAN_TIMEOUT_S), launched.service.logs()


def test_a_second_sigterm_while_the_worker_stops_kills_it_at_once(launched: Launched) -> None:
    service, launcher, worker = launched.service, launched.launcher, launched.worker
    # A worker slow to stop (a stuck fit, a busy machine): the launcher waits on it.
    os.kill(worker, signal.SIGSTOP)
    launcher.send_signal(signal.SIGTERM)
    service.wait_until(lambda: pending(worker, signal.SIGQUIT),
                       "the launcher to stop the worker (cold shutdown)")
    launcher.send_signal(signal.SIGTERM)  # a process manager's second try
    assert launcher.wait(GONE_TIMEOUT_S) == 0, service.logs()
    assert not wait_gone(worker), service.logs()
    assert "Traceback" not in (service.data / "launcher.log").read_text(), service.logs()

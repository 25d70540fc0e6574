"""`python -m api` (`make run`): the API and one Celery worker on this machine.

With no NEXP_BROKER_URL and no NEXP_DATABASE_URL it needs no server at all: the broker is kombu's
filesystem transport and the job table SQLite, both under NEXP_DATA_DIR. Ctrl-C or SIGTERM stops
uvicorn (open requests finish), then the worker with a cold shutdown (SIGQUIT; killed should it
outlast WORKER_STOP_TIMEOUT_S); another Ctrl-C or SIGTERM meanwhile kills the worker at once. A job
that was training is delivered again when the service next starts.

The worker runs in a session of its own, so that a terminal's Ctrl-C reaches this launcher only.
Killing it means killing its process group, pool children included. A launcher that cannot stop
its worker (SIGKILLed: an OOM kill, `docker kill`) leaves it to worker.launcher_watch: the worker
sees its parent gone within a second and shuts itself down.

With no API key (`nexp keys create`) auth is off, so it serves 127.0.0.1 only: another NEXP_HOST
is refused. The retention sweep runs in the API process (api.main), so no Celery beat is needed.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from types import FrameType

import uvicorn
from sqlalchemy.orm import Session

from service import keys
from service.context import prepare_database
from service.db import make_engine
from service.settings import Settings, get_settings
from worker.launcher_watch import LAUNCHER_PID_ENV

WORKER_STOP_TIMEOUT_S = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def auth_on(settings: Settings) -> bool:
    if settings.require_keys:
        return True
    prepare_database(settings)
    engine = make_engine(settings.database)
    try:
        with Session(engine) as session:
            return keys.configured(session)
    finally:
        engine.dispose()


def loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def bind_refusal(host: str, auth: bool) -> str | None:
    """Why the service must not listen on `host`, or None when it may."""
    if auth or loopback(host):
        return None
    return (f"error: refusing to listen on {host} (NEXP_HOST) without API keys: anyone who can "
            "reach it could use this service. Create a key first (nexp keys create --name NAME) "
            "or set NEXP_REQUIRE_KEYS=true; or leave NEXP_HOST unset to serve 127.0.0.1 only.")


class Shutdown(Exception):
    """SIGINT or SIGTERM reached the launcher."""


def start_worker() -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
               "--loglevel=INFO"]
    # A session of its own: the terminal's Ctrl-C reaches only this launcher, which stops the
    # worker after the API, so no job is queued to a worker already gone. The worker watches for
    # this process's end (worker.launcher_watch), as nothing else would tell it.
    return subprocess.Popen(command, start_new_session=True,
                            env={**os.environ, LAUNCHER_PID_ENV: str(os.getpid())})


def kill_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL for the worker's process group: it leads one, with its pool children."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:  # every one of them has exited
        pass


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Cold shutdown (SIGQUIT): a warm one would wait for a training job to finish."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGQUIT)
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    kill_worker(worker)  # past its time, or pool children it left behind
    worker.wait()


class EmbeddedService(uvicorn.Server):
    """uvicorn, starting the worker once its port is bound (a taken port starts nothing)."""

    worker: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        """SIGINT or SIGTERM outside uvicorn's hands (it handles them while it serves, then raises
        them again). The first one stops the service; one while it stops kills the worker now."""
        if not self.stopping:
            self.stopping = True
            raise Shutdown(signal.Signals(signum).name)
        # Once reaped, its pid may be another's: stop_worker kills what it left behind.
        if self.worker is not None and self.worker.returncode is None:
            kill_worker(self.worker)

    def stop(self) -> None:
        """The worker, once uvicorn has stopped; a signal meanwhile must not raise out of here."""
        self.stopping = True
        if self.worker is not None:
            stop_worker(self.worker)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.worker = start_worker()
        print(f"Neural Experts on http://{self.config.host}:{self.config.port}/ "
              "(API docs at /docs; Ctrl-C stops it)", flush=True)


def main() -> int:
    settings = get_settings()
    auth = auth_on(settings)
    refusal = bind_refusal(settings.host, auth)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if not auth:
        print(f"No API keys: auth is off and the service listens on {settings.host} only, for "
              "this machine's users (nexp keys create --name NAME turns auth on)", flush=True)
    server = EmbeddedService(uvicorn.Config("api.main:app", host=settings.host,
                                            port=settings.port))
    for sig in STOP_SIGNALS:
        signal.signal(sig, server.on_stop_signal)
    try:
        server.run()
    except Shutdown:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

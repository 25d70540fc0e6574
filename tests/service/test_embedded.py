"""`python -m api` (what `make run` runs): API + worker with no server, then a clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import service_env
from tests.utils.service import Service, free_port, submit, wait_for, wait_status


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def launch(service: Service) -> subprocess.Popen[bytes]:
    worker_ready = service.logs_from_now("launcher", b" ready.")
    launcher = service.spawn("launcher", [sys.executable, "-m", "api"])
    service.wait_until(lambda: worker_ready() and service.answers("/readyz"), "the service")
    return launcher


def interrupt(service: Service, launcher: subprocess.Popen[bytes]) -> None:
    """Ctrl-C: the launcher stops uvicorn, then the worker, and exits 0 with nothing left."""
    worker, = children(launcher.pid)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(60) == 0, service.logs()
    assert not Path(f"/proc/{worker}").exists(), "the worker outlived the launcher"


def test_make_run_serves_a_fit_and_stops_cleanly(tmp_path: Path, pretrain_cache: Path,
                                                  kodak_crop: Path) -> None:
    port = free_port()
    service = Service(tmp_path, {**service_env(tmp_path, pretrain_cache), "PORT": str(port)},
                      port)
    try:
        launcher = launch(service)
        assert f"http://127.0.0.1:{port}/" in (tmp_path / "launcher.log").read_text()
        with service.client() as client:
            job = submit(client, kodak_crop, steps=10)
            assert wait_status(client, job["id"], "succeeded", "failed")["status"] == "succeeded"
            image = client.get(job["urls"]["reconstruction"]).content
            training = submit(client, kodak_crop, steps=60)
            wait_for(client, training["id"], lambda j: (j["progress"] or {}).get("step", 0) > 0,
                     "training")
        interrupt(service, launcher)  # in the middle of a fit
        assert (tmp_path / "broker").is_dir() and (tmp_path / "jobs.sqlite3").is_file()

        # A restart loses no job and no artifact, and finishes the interrupted fit.
        launcher = launch(service)
        with service.client() as client:
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
            assert client.get(job["urls"]["reconstruction"]).content == image
            resumed = wait_status(client, training["id"], "succeeded", "failed", "canceled")
            assert resumed["status"] == "succeeded" and resumed["attempts"] == 2, resumed
        interrupt(service, launcher)
    finally:
        service.stop_all()

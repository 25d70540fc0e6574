"""docker-compose.yml validates with the machine's compose tool and runs what the code defines."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_config() -> dict:  # type: ignore[type-arg]
    tool = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    if not shutil.which(tool[0]):
        pytest.fail("no docker-compose: scripts/ensure-services.sh installs it (make test)")
    run = subprocess.run([*tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)  # type: ignore[no-any-return]


def test_compose_file_validates_and_reserves_a_gpu_per_worker() -> None:
    services = compose_config()["services"]
    assert {"redis", "postgres", "api", "worker"} <= set(services)
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
    assert "noeviction" in services["redis"]["command"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["NEXP_BROKER_URL"].startswith("redis://")
        assert env["NEXP_DATABASE_URL"].startswith("postgresql")
        assert (ROOT / services[name]["build"]["dockerfile"]).is_file()


def test_compose_commands_name_real_modules() -> None:
    services = compose_config()["services"]
    worker_command = services["worker"]["command"]
    app_module = worker_command[worker_command.index("-A") + 1]
    assert hasattr(importlib.import_module(app_module), "app")
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert '"api.main:app"' in dockerfile
    assert hasattr(importlib.import_module("api.main"), "app")

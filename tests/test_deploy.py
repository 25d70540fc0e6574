"""docker-compose.yml validates with the machine's compose tool and runs what the code defines."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose_config() -> dict:  # type: ignore[type-arg]
    tool = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    if not shutil.which(tool[0]):
        pytest.fail("no docker-compose: scripts/ensure-services.sh installs it (make test)")
    run = subprocess.run([*tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)  # type: ignore[no-any-return]


def gpu_workers(services: dict) -> dict:  # type: ignore[type-arg]
    return {name: service for name, service in services.items() if name.startswith("worker-gpu")}


def test_compose_file_validates_and_reserves_a_gpu_per_worker() -> None:
    services = compose_config()["services"]
    assert {"redis", "postgres", "minio", "api"} <= set(services)
    workers = gpu_workers(services)
    assert len(workers) >= 2, sorted(services)
    reserved = []
    for name, worker in workers.items():
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["capabilities"] == ["gpu"], name
        assert len(devices[0]["device_ids"]) == 1, name
        reserved += devices[0]["device_ids"]
        # One definition (a YAML anchor): the workers differ only in the GPU they reserve.
        same = workers["worker-gpu0"]
        assert (worker["command"], worker["environment"]) == (same["command"], same["environment"])
    assert len(set(reserved)) == len(reserved), f"two workers share a GPU: {reserved}"
    assert "noeviction" in services["redis"]["command"]
    for name in ("api", *workers):
        env = services[name]["environment"]
        assert env["NEXP_BROKER_URL"].startswith("redis://")
        assert env["NEXP_DATABASE_URL"].startswith("postgresql")
        assert (ROOT / services[name]["build"]["dockerfile"]).is_file()


def test_api_and_workers_share_the_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose_config()["services"]
    assert services["minio"]["healthcheck"]["test"]
    bucket_job = services["minio-bucket"]
    assert bucket_job["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("api", *gpu_workers(services)):
        env = services[name]["environment"]
        url = urlsplit(env["NEXP_STORAGE_URL"])
        assert url.scheme == "s3" and f"store/{url.netloc}" in bucket_job["entrypoint"], name
        assert urlsplit(env["NEXP_S3_ENDPOINT_URL"]).hostname == "minio", name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
        assert services[name]["depends_on"]["minio-bucket"]["condition"] == (
            "service_completed_successfully"), name
        assert not any(":/artifacts" in volume for volume in services[name].get("volumes", []))
        for variable, value in env.items():  # the service's settings accept its environment
            monkeypatch.setenv(variable, value)
        assert Settings().storage_url == env["NEXP_STORAGE_URL"]


def test_compose_commands_name_real_modules() -> None:
    services = compose_config()["services"]
    for worker in gpu_workers(services).values():
        command = worker["command"]
        assert hasattr(importlib.import_module(command[command.index("-A") + 1]), "app")
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert '"api.main:app"' in dockerfile
    assert hasattr(importlib.import_module("api.main"), "app")

"""service.settings: one NEXP_* environment, defaults that need no server, checked options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_the_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "var"  # absolute: subprocesses agree on it
    assert settings.embedded_broker and settings.broker.startswith("filesystem://")
    assert settings.database == f"sqlite:///{tmp_path / 'var' / 'jobs.sqlite3'}"
    assert settings.port == 8000 and settings.hard_time_limit_s > settings.time_limit_s


def test_the_environment_sets_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("NEXP_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("NEXP_DATABASE_URL", "postgresql+psycopg://nexp@db/nexp")
    monkeypatch.setenv("NEXP_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("NEXP_LOAD_OPTIONS", '{"sdf": {"eval_resolution": 32, "max_points": 9}}')
    settings = Settings()
    assert settings.port == 9001 and not settings.embedded_broker
    assert settings.database == "postgresql+psycopg://nexp@db/nexp"
    assert settings.loader_options("image") == {"max_pixels": 1000}
    # The caps win over NEXP_LOAD_OPTIONS.
    assert settings.loader_options("sdf") == {"eval_resolution": 32,
                                              "max_points": settings.max_sdf_points}


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("NEXP_LOAD_OPTIONS", '{"video": {}}', "unknown signal kind 'video'"),
    ("NEXP_LOAD_OPTIONS", '{"sdf": {"resolution": 3}}', "sdf loading has no option resolution"),
    ("NEXP_MAX_UPLOAD_BYTES", "0", "greater than 0"),
    ("NEXP_TORCH_THREADS", "-1", "greater than or equal to 0"),
    ("NEXP_DEVICE", "gpu", "should match pattern"),
])
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                        value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_worker_refuses_to_start_without_its_device(tmp_path: Path) -> None:
    env = {**os.environ, "NEXP_DATA_DIR": str(tmp_path), "NEXP_DEVICE": "cuda:7"}
    run = subprocess.run([sys.executable, "-m", "celery", "-q", "-A", "worker.celery_app", "worker"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "NEXP_DEVICE: device 'cuda:7' is not available" in run.stderr + run.stdout

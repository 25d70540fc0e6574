"""Fit options declared once (model.options): GET /v1/options, JobCreate and the CLI agree with
the declaration, and a choice added to a registry shows in each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from api.schemas import API_OPTIONS, JobCreate, check_declared
from model.network import ACTIVATIONS
from model.options import FitOptions, user_options
from model.presets import MAX_EXPERTS, MODELS, PRESETS
from model.signals import kinds
from tests.utils.app import serve, settings


def test_options_list_each_form_field_with_its_choices_and_bounds(tmp_path: Path) -> None:
    with serve(settings(tmp_path)) as client:
        response = client.get("/v1/options")
    assert response.status_code == 200, response.text
    options = {option["name"]: option for option in response.json()["options"]}
    assert list(options) == [name for name in JobCreate.model_fields if name in API_OPTIONS]
    assert "device" not in options and "compile" not in options  # the service decides those
    assert [c["value"] for c in options["model"]["choices"]] == list(MODELS)
    assert {"value": "neural-experts", "label": "Neural Experts"} in options["model"]["choices"]
    assert [c["value"] for c in options["activation"]["choices"]] == list(ACTIVATIONS)
    # Each kind declares the data protocols its loader takes (model.signals): here, every kind's.
    assert [c["value"] for c in options["protocol"]["choices"]] == [
        protocol for kind in kinds().values() for protocol in kind.protocols] == ["paper"]
    assert options["experts"] | {"help": ""} == {
        "name": "experts", "type": "integer", "default": None, "help": "", "choices": [],
        "minimum": 2, "exclusive_minimum": None, "maximum": MAX_EXPERTS}
    assert options["lr"]["type"] == "number" and options["lr"]["exclusive_minimum"] == 0
    assert options["seed"]["maximum"] == 2**63 - 1  # exact: an integer, not a float
    assert "NEXP_DEFAULT_TIME_BUDGET_S" in options["time_budget_s"]["help"]


def test_a_preset_added_to_the_registry_is_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRESETS, "custom", PRESETS["fast"])
    with serve(settings(tmp_path)) as client:
        preset = next(o for o in client.get("/v1/options").json()["options"] if o["name"] == "preset")
    assert "custom" in [c["value"] for c in preset["choices"]]


def test_options_are_open_while_jobs_need_a_key(tmp_path: Path) -> None:
    # The page builds its form before anyone has entered a key; /openapi.json says as much.
    with serve(settings(tmp_path, require_keys=True)) as client:
        assert client.get("/v1/options").status_code == 200
        assert client.get("/v1/jobs").status_code == 401


def test_jobcreate_has_a_field_per_declared_option() -> None:
    declared = {f.name for f in user_options()} - {"device", "compile"}
    assert set(API_OPTIONS) == declared <= set(JobCreate.model_fields)

    class Short(BaseModel):
        preset: str = "fast"

    with pytest.raises(TypeError, match="disagree on"):
        check_declared(Short)


def test_fit_options_refuse_what_their_declaration_bounds() -> None:
    for bad, why in [({"steps": 0}, "steps must be 1 or more"), ({"experts": 33}, "experts must be 2 to 32"),
                     ({"lr": float("nan")}, "lr must be a finite number above 0"),
                     ({"seed": 2**63}, "seed must be 0 to 9223372036854775807")]:
        with pytest.raises(ValueError, match=why):
            FitOptions(**bad)


def test_the_cli_offers_every_declared_option_with_its_choices() -> None:
    run = subprocess.run([sys.executable, "-m", "model.cli", "fit", "--help"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    for flag in ("--preset", "--steps", "--lr", "--model", "--experts", "--activation", "--seed",
                 "--device", "--compile", "--top-k", "--time-budget", "--target-psnr", "--protocol",
                 "--cache-dir", "--out"):
        assert flag in run.stdout, flag
    assert "|".join(ACTIVATIONS) in run.stdout and f"2<=x<={MAX_EXPERTS}" in run.stdout

"""The signal-kind registry: what each kind declares matches its code, and a kind declared in one
file (tests/utils/toy_kind.py, registered at runtime) gets its settings, upload checks, routes,
page entry (run-time cost and poor-result rules included), fit option choice (its data protocol)
and `nexp render` with no other edit."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.signals import SignalError, kinds

TOY = "import tests.utils.toy_kind\n"


def run(code: str, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter that has registered the toy kind first."""
    return subprocess.run([sys.executable, "-c", TOY + code, *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


def nexp(*args: object) -> subprocess.CompletedProcess[str]:
    return run("from model.cli import app\napp()", *args)


@pytest.mark.parametrize("name", sorted(kinds()))
def test_each_kind_declares_what_its_code_takes(name: str) -> None:
    kind = kinds()[name]
    load_keywords = set(inspect.signature(kind.loader).parameters)
    settings = {cap.setting for cap in kind.caps}
    for cap in kind.caps:
        assert cap.load_option is None or cap.load_option in load_keywords, cap
    for output in kind.outputs.values():
        keywords = list(inspect.signature(output.render).parameters)[2:]  # after model, meta
        assert [option.name for option in output.options] == keywords, output.summary
        assert all(option.cap is None or option.cap in settings for option in output.options)
        assert output.media_types
    assert all(media_type.split("/")[0] for media_type in kind.media_types.values())
    assert kind.cpu_step_s > 0


@pytest.mark.parametrize("name", sorted(kinds()))
def test_each_output_names_its_formats_by_extension_once(name: str) -> None:
    """A format taken from the output file's extension (from_suffix) is one of its declared
    suffixes and back: `nexp render` and `nexp mesh` check the one and pass the other."""
    for output in kinds()[name].outputs.values():
        for option in (o for o in output.options if o.from_suffix):
            assert [f".{choice}" for choice in option.choices] == list(output.suffixes), output.summary


@pytest.mark.parametrize("name", sorted(kinds()))
def test_each_kind_takes_the_protocols_it_declares_and_refuses_the_rest(name: str) -> None:
    kind = kinds()[name]
    for protocol in (None, *kind.protocols):
        kind.check_protocol(protocol)
    others = {p for k in kinds().values() for p in k.protocols} - set(kind.protocols)
    for protocol in {"weird", *others}:
        with pytest.raises(SignalError) as info:
            kind.check_protocol(protocol)
        assert info.value.code == "invalid_option"
        assert repr(protocol) in str(info.value) and kind.label in str(info.value)
        assert all(repr(p) in str(info.value) for p in kind.protocols)


def test_a_kind_in_one_file_gets_its_settings_and_upload_checks(tmp_path: Path) -> None:
    toy = tmp_path / "numbers.txt"
    toy.write_bytes(b"TOY1 0.1 0.5 -0.3 0.2 0.9")
    probe = run("""
import json, sys
from pathlib import Path
from api.errors import ApiError
from api.schemas import JobCreate
from api.uploads import Spooled, validate
from model.options import protocols
from service.settings import Settings

def outcome(declared, options=JobCreate()):
    try:
        return list(validate(Spooled(Path(sys.argv[1]), "numbers.txt", declared, ""), options,
                             settings))
    except ApiError as e:
        return [e.status, e.code]

settings = Settings()
capped = Settings(max_toy_values=4)
answers = {"plain": outcome("text/plain"), "as image": outcome("image/png"),
           "own protocol": outcome("", JobCreate(protocol="reversed")),
           "image's protocol": outcome("", JobCreate(protocol="paper")),
           "protocols": list(protocols()),
           "loader": settings.loader_options("toy"), "render cap": settings.cap("max_toy_samples")}
settings = capped
answers["capped"] = outcome("")
print(json.dumps(answers))
""", toy, NEXP_MAX_TOY_SAMPLES="77")
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    assert answers["plain"] == ["toy", ".toy"]  # sniffed by content, whatever its name
    assert answers["as image"] == [415, "content_type_mismatch"]
    assert answers["protocols"] == ["paper", "reversed"]  # the fit option offers every kind's
    assert answers["own protocol"] == ["toy", ".toy"]
    assert answers["image's protocol"] == [422, "invalid_option"]
    assert answers["loader"] == {"max_values": 64}
    assert answers["render cap"] == 77  # NEXP_MAX_TOY_SAMPLES: a setting, named after the cap
    assert answers["capped"] == [413, "too_large"]


def test_a_kind_in_one_file_gets_its_routes_and_page_entry() -> None:
    probe = run("""
import json
from api.main import create_app
from api.routes.kinds import list_kinds
paths = create_app().openapi()["paths"]
kinds = [kind.model_dump() for kind in list_kinds()]
print(json.dumps({"curve": paths.get("/v1/jobs/{job_id}/curve"),
                  "reconstruction": paths["/v1/jobs/{job_id}/reconstruction"], "kinds": kinds}))
""")
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    curve = answers["curve"]["get"]
    assert [p["name"] for p in curve["parameters"]] == ["job_id", "samples"]
    reconstruction = {p["name"]: p for p in answers["reconstruction"]["get"]["parameters"]}
    assert reconstruction["samples"]["description"] == "toy: values (default: the input's)"
    assert {"width", "sample_rate"} <= reconstruction.keys()  # the other kinds' still there
    toy = next(k for k in answers["kinds"] if k["name"] == "toy")
    assert toy["label"] == "toy signal" and [o["name"] for o in toy["outputs"]] == ["reconstruction",
                                                                                   "curve"]
    assert (toy["media_family"], toy["suffixes"], toy["cpu_step_s"]) == ("text", [".toy"], 1.5)
    assert toy["poor_results"] == [{"metric": "close", "below": 0.9, "problem": "The toy is off",
                                    "advice": "most values are more than 0.1 away. Try more steps."}]


def test_a_kind_in_one_file_is_fitted_and_rendered_by_the_cli(tmp_path: Path,
                                                              pretrain_cache: Path) -> None:
    toy = tmp_path / "wave.toy"
    toy.write_bytes(b"TOY1 " + " ".join(str(i / 10) for i in range(-8, 9)).encode())
    out = tmp_path / "fit"
    fitted = nexp("fit", toy, "--out", out, "--steps", 3, "--cache-dir", pretrain_cache)
    assert fitted.returncode == 0, fitted.stderr
    assert (out / "values.json").exists()
    assert "close" in json.loads((out / "metrics.json").read_text())  # its poor result's metric
    rendered = nexp("render", out, "--samples", 5, "-o", tmp_path / "five.json")
    assert rendered.returncode == 0, rendered.stderr
    assert len(json.loads((tmp_path / "five.json").read_text())) == 5
    misuse = nexp("render", out, "--width", 5, "-o", tmp_path / "x.json")
    assert misuse.returncode == 2 and "--width applies to image models" in misuse.stderr
    wrong = nexp("render", out, "-o", tmp_path / "x.png")
    assert wrong.returncode == 2 and "this render writes .json" in wrong.stderr

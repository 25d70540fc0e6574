"""`nexp` as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from model.cli import mesh_output

NEXP = [sys.executable, "-m", "model.cli"]


def nexp(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NEXP, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fitted(kodak_crop: Path, pretrain_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit")
    run = nexp("fit", kodak_crop, "--out", out, "--steps", 20, "--cache-dir", pretrain_cache)
    assert run.returncode == 0, run.stderr
    assert "psnr" in run.stdout
    return out


def test_fit_writes_the_checkpoint_metrics_and_previews(fitted: Path) -> None:
    names = {p.name for p in fitted.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "reconstruction.png",
            "experts.png"} <= names
    config = json.loads((fitted / "config.json").read_text())
    assert config["parameters"] == 365_968 and config["kind"] == "image"
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert set(metrics) == {"psnr", "psnr_paper", "ssim", "stop_reason"}
    assert metrics["stop_reason"] == "steps"
    with Image.open(fitted / "reconstruction.png") as img:
        assert img.size == (32, 32)


@pytest.mark.parametrize(("option", "why"), [
    (("--top-k", 5), "top_k must be 1 to K = 4"), (("--time-budget", 0), "time_budget_s must be"),
    (("--target-psnr", 500), "target-psnr"),
])
def test_bad_budget_target_or_top_k_exit_2(kodak_crop: Path, tmp_path: Path,
                                            option: tuple[str, int], why: str) -> None:
    run = nexp("fit", kodak_crop, "--out", tmp_path / "fit", *option)
    assert run.returncode == 2 and why in run.stderr, run.stderr


def test_render_at_a_larger_size(fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "big.png"
    run = nexp("render", fitted, "--width", 96, "--height", 64, "-o", out)
    assert run.returncode == 0, run.stderr
    with Image.open(out) as img:
        assert img.size == (96, 64)
    run = nexp("render", fitted, "--width", 40, "--height", 40, "--experts", "-o", out)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["render", "{fit}", "--sample-rate", "8000", "-o", "x.wav"], "applies to audio"),
    (["mesh", "{fit}", "-o", "x.ply"], "holds an image model"),
    (["render", "{fit}", "-o", "x.jpg"], "this render writes .png"),
    (["render", "{fit}", "--width", "100000", "--height", "100000", "-o", "x.png"], "pixel cap"),
    (["mesh", "{fit}", "-o", "x.stl"], "extension"),
    (["render", "{tmp}", "-o", "x.png"], "cannot load checkpoint"),
])
def test_misuse_exits_2_with_one_line(fitted: Path, tmp_path: Path, args: list[str],
                                      message: str) -> None:
    run = nexp(*(a.format(fit=fitted, tmp=tmp_path) for a in args))
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr


def test_mesh_names_the_formats_its_kind_declares(tmp_path: Path) -> None:
    """The extension is checked first, before the checkpoint is read."""
    _, spec = mesh_output()
    assert ".stl" not in spec.suffixes  # else this test picks another extension
    run = nexp("mesh", tmp_path, "-o", "bunny.stl")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert all(suffix in run.stderr for suffix in spec.suffixes), run.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n garbage", "not a readable image"),
    (b"hello world", "unknown file type"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "input.dat"
    path.write_bytes(content)
    run = nexp("fit", path, "--out", tmp_path / "out")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_path_exits_2(tmp_path: Path) -> None:
    run = nexp("fit", tmp_path / "missing.png", "--out", tmp_path / "out")
    assert run.returncode == 2 and "cannot read" in run.stderr


@pytest.mark.parametrize(("device", "message"),
                         [("cuda:7", "is not available"), ("banana", "unknown device")])
def test_a_device_this_machine_lacks_exits_2(kodak_crop: Path, tmp_path: Path, device: str,
                                             message: str) -> None:
    run = nexp("fit", kodak_crop, "--out", tmp_path / "out", "--steps", 1, "--device", device)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()

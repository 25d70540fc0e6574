"""`make bench`'s fitting sections, dry-run (`--steps 2`): a change to model/ that breaks the
benchmark fails here, not when someone next spends twenty minutes running it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.stack import Stack
from tests.utils.data import DATA

REPO = Path(__file__).resolve().parents[1]


def run_sections(results: Path, *args: str, timeout: float = 600) -> None:
    """`python -m bench ARGS` on the repo's own data (the sections' files, cut short), its
    results written to `results`; it must exit 0."""
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "bench", *args, "--results", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "NEXP_BENCH_DATA_DIR": str(DATA)},
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_the_fitting_sections_dry_run(tmp_path: Path) -> None:
    run_sections(tmp_path, "quality", "audio", "sdf", "--steps", "2")

    quality = json.loads((tmp_path / "quality.json").read_text())["runs"]
    assert {r["model"] for r in quality} == {"siren", "siren-wider", "neural-experts"}
    assert all(r["steps"] == 2 and math.isfinite(r["psnr"]) for r in quality)
    assert "Neural Experts, fast preset" in (tmp_path / "quality.md").read_text()

    audio = json.loads((tmp_path / "audio.json").read_text())["runs"]
    assert {r["clip"] for r in audio} == {"bach", "counting", "twospeakers"}
    assert all(math.isfinite(r["mse"]) for r in audio)

    sdf = json.loads((tmp_path / "sdf.json").read_text())["runs"]
    assert [r["model"] for r in sdf] == ["siren", "neural-experts"]
    assert all(math.isfinite(r["metrics"][k]) for r in sdf for k in ("iou", "trimap_iou", "chamfer"))


def test_the_sparse_section_dry_runs(tmp_path: Path) -> None:
    # Step times against K (dense and sparse) and the equal-budget fits, cut to 2 rounds, a
    # 1,024-point batch and 1 s budgets: no timing is asserted, only that every row is there.
    run_sections(tmp_path, "sparse", "--steps", "2")
    result = json.loads((tmp_path / "sparse.json").read_text())
    assert [row[0] for row in result["step_times"]["rows"]] == [4, 16, 64]
    assert all(math.isfinite(fit["psnr"]) for fit in result["fits"])
    assert "CPU:" in (tmp_path / "sparse.md").read_text()


def test_the_service_stack_starts_survives_a_killed_worker_and_stops(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", workers=1)
    stack.start()
    try:
        assert httpx.get(stack.url + "/readyz", timeout=10).status_code == 200
        stack.kill_worker(0)
        stack.start_worker(0)  # waits for the new worker's " ready."
    finally:
        stack.stop()
    assert all(process.poll() is not None for process in stack.harness.processes.values())
    assert (tmp_path / "stack" / "worker0.log").exists()


@pytest.mark.timeout(900)  # three worker starts and 1,500 steps of fits on one shared thread
def test_the_faults_section_dry_runs(tmp_path: Path) -> None:
    # A private Redis, API and worker; one 600-step job a mode, its worker SIGKILLed mid-fit.
    run_sections(tmp_path, "faults", "--steps", "600", timeout=1200)
    result = json.loads((tmp_path / "faults.json").read_text())
    assert result["lost"] == 0
    restart, resume = result["modes"].values()
    assert restart["snapshot_every_s"] == 0 and resume["snapshot_every_s"] > 0
    for mode in (restart, resume):
        assert [run["stored"] for run in mode["runs"]] == [1], mode  # stored once, not twice
        assert all(run["attempts"] == 2 for run in mode["runs"]), mode
    assert restart["mean_redone"] == restart["mean_step_at_kill"]  # from step 0 again
    assert all(run["resumed_from_step"] > 0 for run in resume["runs"])
    assert resume["mean_redone"] < restart["mean_redone"]
    assert "steps redone per kill" in (tmp_path / "faults.md").read_text()


def test_the_realsize_section_dry_runs(tmp_path: Path) -> None:
    # A 256 x 192 corner of kodim19 (the one Kodak image tests/data keeps), every variant for 2
    # steps at one budget, step times on 1,024 points, a 1 s speech clip and spot for 2 steps:
    # the rows, not the numbers.
    run_sections(tmp_path, "realsize", "--steps", "2", "--budgets", "60")
    result = json.loads((tmp_path / "realsize.json").read_text())
    variants = {f["variant"] for f in result["fits"]}
    assert variants == {"fast, fixed size (before)", "size-aware default", "SIREN Base"}
    sized = next(f for f in result["fits"] if f["variant"] == "size-aware default")
    assert sized["encoding"] == "grid" and sized["bytes"] > 0
    assert all(math.isfinite(f["psnr"]) and math.isfinite(f["jpeg_psnr"]) for f in result["fits"])
    assert [row[0] for row in result["step_times"]["rows"]] == [4, 16, 64]
    assert math.isfinite(result["speech"]["mse"]) and result["mesh"]["points"] > 0
    assert "CPU:" in (tmp_path / "realsize.md").read_text()

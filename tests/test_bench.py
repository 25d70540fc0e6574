"""`make bench`'s fitting sections, dry-run (`--steps 2`): a change to model/ that breaks the
benchmark fails here, not when someone next spends twenty minutes running it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.utils.data import DATA

REPO = Path(__file__).resolve().parents[1]


def test_the_fitting_sections_dry_run(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "bench", "quality", "audio", "sdf", "--steps", "2",
         "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NEXP_BENCH_DATA_DIR": str(DATA)},  # the sections' files, cut short
    )
    assert run.returncode == 0, run.stderr[-3000:]

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
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "bench", "sparse", "--steps", "2",
         "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NEXP_BENCH_DATA_DIR": str(DATA)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "sparse.json").read_text())
    assert [row[0] for row in result["step_times"]["rows"]] == [4, 16, 64]
    assert all(math.isfinite(fit["psnr"]) for fit in result["fits"])
    assert "CPU:" in (tmp_path / "sparse.md").read_text()

"""bench.gpu, the script a GPU lease runs once: its CPU dry run must work here, so that the few
minutes a GPU session gets are never spent finding out that it does not."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.utils.data import DATA

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_dry_runs_on_a_cpu(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "bench.gpu", "--device", "cpu", "--steps", "3",
         "--images", "kodim19", "--render-sides", "32", "--repeats", "1", "--steps-per-sample", "1",
         "--models", "siren", "neural-experts", "--seeds", "1", "--fast-steps", "eager",
         "--budget", "240", "--scratch", str(tmp_path / "scratch"), "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NEXP_BENCH_DATA_DIR": str(DATA)},  # kodim19 only: both presets fit it
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert set(result["train_ms"]) == {"reference (eager einsum)", "ours eager", "ours compiled"}
    assert set(result["render_32_ms"]) == {"reference (one batch, dense)", "ours dense", "ours routed"}
    key = ("model", "preset", "image", "seed", "step")
    fits = {tuple(f["job"][k] for k in key): f for f in result["fits"]}
    models = ("siren", "neural-experts")
    expected = {(m, "paper", "kodim19", 0, "compiled") for m in models} | {
        (m, "fast", "kodim19", 1, "eager") for m in models}
    assert set(fits) == expected
    assert all(f["done"] and f["step"] == 3 and math.isfinite(f["psnr"]) for f in fits.values())
    assert "Routed == dense: same ids True" in (tmp_path / "gpu.md").read_text()

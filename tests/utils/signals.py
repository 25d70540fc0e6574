"""Small real (and deliberately broken) signal files for service tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import model.pretrain
from model.fit import FitOptions, fit
from model.signals import load_signal
from tests.utils.data import BACH

# Small SDF sampling and evaluation, so a 3D fit takes seconds on one core, through the same code
# paths as the defaults (tests/model/test_sdf.py).
SDF_LOAD = {"surface_samples": 20_000, "pool_size": 20_000, "eval_resolution": 24,
            "chamfer_points": 5_000, "trimap_band": 0.05}


def bach_clip(dest: Path, seconds: float) -> Path:
    """The first `seconds` of the Bach excerpt (2 s into the recording, which opens with near
    silence)."""
    samples, rate = sf.read(BACH, dtype="float32")
    sf.write(dest, samples[: round(seconds * rate)], rate, subtype="PCM_16")
    return dest


def decompression_bomb(dest: Path, side: int) -> Path:
    """A few kilobytes of PNG that decode to side x side pixels."""
    Image.new("1", (side, side)).save(dest)
    return dest


def sphere_points(dest: Path, count: int, poison: float | None = None) -> Path:
    """An oriented point cloud as XYZ text ("x y z nx ny nz"); `poison` replaces one value."""
    normals = np.random.default_rng(0).normal(size=(count, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rows = np.hstack([normals * 0.8, normals])
    if poison is not None:
        rows[count // 2, 0] = poison
    np.savetxt(dest, rows, fmt="%.6f")
    return dest


def seed_pretraining(cache_dir: Path, path: Path, **load_options: object) -> None:
    """Fill the pretraining cache for default-option fits of `path` with an untrained manager,
    by one real fit step with pretraining itself stubbed out. The fast preset pretrains the
    1.3M-parameter 3D model in ~25 s on one core, which the suite would pay once per run; service
    tests check the service around a fit, not pretraining (tests/model does)."""
    with pytest.MonkeyPatch.context() as patch:
        # Reports every step as run, so that the untrained manager is cached under the key.
        patch.setattr(model.pretrain, "pretrain_manager",
                      lambda model, grid, pretraining, *rest, **kwargs: pretraining.steps)
        fit(load_signal(path, **load_options), FitOptions(steps=1, device="cpu"),
            cache_dir=cache_dir)

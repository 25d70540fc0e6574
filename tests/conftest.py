"""Shared fixtures: real data from tests/data, small real signals written to tmp."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.utils.data import SPOT, kodim19_crop
from tests.utils.signals import SDF_LOAD, bach_clip, seed_pretraining

# Tests share 2 cores with each other and with a worker subprocess: one thread each.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def kodak_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 32x32 RGB crop of a Kodak photo (kodim19, the paper's ablation image)."""
    return kodim19_crop(tmp_path_factory.mktemp("images") / "kodim19-32.png", (40, 60, 72, 92))


@pytest.fixture(scope="session")
def pretrain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One manager-pretraining cache for the whole session, as a worker would keep."""
    return tmp_path_factory.mktemp("pretrain-cache")


@pytest.fixture(scope="session")
def bach(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bach_clip(tmp_path_factory.mktemp("audio") / "bach-0.1s.wav", 0.1)


@pytest.fixture(scope="session")
def spot(pretrain_cache: Path) -> Path:
    """Spot the cow (a triangle mesh); its fit skips pretraining (seed_pretraining says why)."""
    seed_pretraining(pretrain_cache, SPOT, **SDF_LOAD)
    return SPOT

"""api.rendering: checkpoints load once, identical renders are served from memory."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from api.rendering import LRU, Renderer
from model.checkpoint import CONFIG, METRICS, WEIGHTS, save_checkpoint
from model.fit import FitOptions, build_model
from model.signals import load_signal
from service.settings import Settings
from service.storage import LocalStorage, checkpoint_key


def test_the_lru_is_bounded_by_weight() -> None:
    cache: LRU[str, bytes] = LRU(10, len)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # now the most recent
    cache.put("c", b"cccc")  # 12 > 10: the least recent ("b") goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.put("huge", b"x" * 11)  # bigger than the whole cache: not kept
    assert cache.get("huge") is None and cache.get("a")
    cache.drop(lambda key: key != "a")
    assert cache.get("a") is None and cache.get("c")


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get(key)


@pytest.fixture
def renderer(tmp_path: Path, kodak_crop: Path) -> tuple[Renderer, CountingStorage]:
    """A renderer over one untrained image checkpoint, job "j1"."""
    signal = load_signal(kodak_crop)
    model = build_model(signal, FitOptions())
    save_checkpoint(tmp_path / "ckpt", model, {"kind": "image", "model": model.config.to_dict(),
                                               "signal": signal.meta()}, {})
    storage = CountingStorage(tmp_path / "artifacts")
    for name in (CONFIG, METRICS, WEIGHTS):
        storage.put(checkpoint_key("j1", name), (tmp_path / "ckpt" / name).read_bytes())
    return Renderer(storage, Settings(data_dir=tmp_path)), storage


def test_identical_renders_come_from_the_cache(renderer: tuple[Renderer, CountingStorage]) -> None:
    render, storage = renderer

    async def scenario() -> None:
        first = await render.render("j1", "reconstruction", {"width": 20, "height": 10})
        again = await render.render("j1", "reconstruction", {"height": 10, "width": 20})
        assert again is first
        other = await render.render("j1", "experts", {"width": 20, "height": 10})
        assert other is not first and other.media_type == "image/png"
        assert sorted(storage.reads) == sorted([checkpoint_key("j1", CONFIG),
                                                checkpoint_key("j1", WEIGHTS)])  # loaded once
        render.forget("j1")
        after = await render.render("j1", "reconstruction", {"width": 20, "height": 10})
        assert after is not first and after.data == first.data and len(storage.reads) == 4

    anyio.run(scenario)

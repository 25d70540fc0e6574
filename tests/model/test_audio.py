"""Audio signals: loading, bad input, a tiny fit, and every output."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from model.fit import FitOptions, FitResult, build_model, fit
from model.presets import PRESETS
from model.render import expert_colors
from model.signals import SignalError, audio, kind_of, load_signal
from model.signals.audio import AudioSignal
from tests.utils.data import BACH, TWO_SPEAKERS

EXCERPT = 512  # samples (~12 ms at 44.1 kHz): enough to learn something in 30 CPU steps
RATE = 8000


def _write(path: Path, data: np.ndarray, *, rate: int = RATE, **kwargs: str) -> Path:
    sf.write(path, data, rate, **kwargs)
    return path


# --------------------------------------------------------------------------- loading


def test_load_mono_float_wav() -> None:
    raw, rate = sf.read(BACH, dtype="float32")
    signal = audio.load(BACH)
    meta = signal.meta()
    assert meta["sample_rate"] == rate == 44100
    assert meta["samples"] == len(raw) == signal.grid.shape[0]
    assert meta["channels"] == 1
    assert meta["scale"] == pytest.approx(float(np.abs(raw).max()))
    assert meta["duration_s"] == pytest.approx(len(raw) / rate)
    assert float(signal.samples.abs().max()) == pytest.approx(1.0)
    assert (signal.kind, signal.task, signal.in_dim, signal.out_dim) == ("audio", "audio", 1, 1)
    coords = signal.grid.coords()
    assert coords.shape == (len(raw), 1)
    assert (float(coords[0, 0]), float(coords[-1, 0])) == (-100.0, 100.0)


def test_load_stereo_int16_wav_averages_channels() -> None:
    raw, _ = sf.read(TWO_SPEAKERS, dtype="float32", always_2d=True)
    signal = load_signal(TWO_SPEAKERS)
    assert isinstance(signal, AudioSignal)
    assert raw.shape[1] == 2 and signal.meta()["channels"] == 2
    mono = raw.mean(axis=1)
    np.testing.assert_allclose(signal.meta()["scale"], np.abs(mono).max(), rtol=1e-6)
    np.testing.assert_allclose(signal.samples[:, 0].numpy(), mono / np.abs(mono).max(), atol=1e-6)
    assert float(signal.samples.abs().max()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("suffix", "kwargs"),
    [(".flac", {"format": "FLAC"}), (".ogg", {"format": "OGG", "subtype": "VORBIS"}),
     (".wav", {"format": "WAV", "subtype": "PCM_24"})],
)
def test_formats_sniffed_by_content(tmp_path: Path, suffix: str, kwargs: dict[str, Any]) -> None:
    t = np.arange(RATE // 4) / RATE
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1)
    path = _write(tmp_path / f"clip{suffix}.bin", stereo, **kwargs)  # the name says nothing
    assert kind_of(path).name == "audio"
    signal = load_signal(path)
    assert isinstance(signal, AudioSignal)
    meta = signal.meta()
    assert (meta["sample_rate"], meta["channels"]) == (RATE, 2)
    assert meta["samples"] == len(t)
    assert float(signal.samples.abs().max()) == pytest.approx(1.0)


def test_batch_subset_matches_its_coordinates(tmp_path: Path) -> None:
    wave = np.sin(np.arange(1000) / 7.0)
    signal = audio.load(_write(tmp_path / "a.wav", wave, subtype="FLOAT"))
    full = signal.batch(torch.Generator().manual_seed(0), 1 << 20)
    assert full.coords.shape == (1000, 1) and full.target.shape == (1000, 1)
    part = signal.batch(torch.Generator().manual_seed(0), 100)
    assert part.coords.shape == (100, 1)
    grid = signal.grid  # each coordinate is a sample's: its row is where it sits on the grid
    rows = ((part.coords[:, 0] - grid.low) / (grid.high - grid.low) * (grid.shape[0] - 1)).round().long()
    torch.testing.assert_close(part.target, signal.samples[rows])


# --------------------------------------------------------------------------- bad input


def _wav_bytes(data: np.ndarray, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, RATE, subtype=subtype, format="WAV")
    return buf.getvalue()


BAD_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty file": (lambda: b"", "undecodable"),
    "truncated header": (lambda: _wav_bytes(np.full(100, 0.5))[:20], "undecodable"),
    "garbage named .wav": (lambda: b"definitely not audio " * 50, "undecodable"),
    "zero samples": (lambda: _wav_bytes(np.zeros((0, 1))), "empty_audio"),
    "silent": (lambda: _wav_bytes(np.zeros(RATE), subtype="PCM_16"), "empty_audio"),
    "nan samples": (lambda: _wav_bytes(np.array([0.1, np.nan, -0.2])), "non_finite"),
    "inf samples": (lambda: _wav_bytes(np.array([0.1, np.inf, -0.2])), "non_finite"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_input_raises_signal_error(tmp_path: Path, case: str) -> None:
    make, code = BAD_FILES[case]
    path = tmp_path / "bad.wav"
    path.write_bytes(make())
    with pytest.raises(SignalError) as info:
        audio.load(path)
    assert info.value.code == code
    message = str(info.value)
    assert "\n" not in message and "bad.wav" in message
    assert str(tmp_path) not in message  # the reason, not the server's folders


def test_empty_file_is_refused_before_dispatch(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(SignalError) as info:
        load_signal(path)
    assert info.value.code == "empty_file"


def test_garbage_named_wav_reaches_audio_and_is_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SignalError) as info:
        load_signal(path)
    assert info.value.code == "undecodable"


def test_too_long_is_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "long.wav", np.full(2 * RATE, 0.1), subtype="PCM_16")

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were read before the duration check")

    monkeypatch.setattr(sf, "read", no_read)
    with pytest.raises(SignalError) as info:
        load_signal(path, max_seconds=1.5)
    assert info.value.code == "too_long"
    assert "2.0 s" in str(info.value)


def test_duration_cap_admits_a_clip_at_the_cap(tmp_path: Path) -> None:
    path = _write(tmp_path / "two.wav", np.full(2 * RATE, 0.1), subtype="PCM_16")
    assert audio.load(path, max_seconds=2.0).meta()["samples"] == 2 * RATE


def test_other_formats_libsndfile_reads_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "clip.wav", np.full(100, 0.1), format="AIFF")
    with pytest.raises(SignalError) as info:
        audio.load(path)
    assert info.value.code == "unsupported_type"


@pytest.mark.parametrize("options", [{"protocol": "paper"}, {"max_seconds": 0}])
def test_invalid_options(tmp_path: Path, options: dict[str, Any]) -> None:
    path = _write(tmp_path / "a.wav", np.full(100, 0.1))
    with pytest.raises(SignalError) as info:
        audio.KIND.load(path, **options)  # the kind checks the protocol, then its loader the rest
    assert info.value.code == "invalid_option"


# --------------------------------------------------------------------------- fit and outputs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AudioSignal, FitResult]]:
    folder = tmp_path_factory.mktemp("audio-fit")
    wave, rate = sf.read(BACH, dtype="float32")
    start = len(wave) // 2  # mid-excerpt, where the music is loud
    path = _write(folder / "excerpt.wav", wave[start : start + EXCERPT], rate=rate,
                  subtype="FLOAT")
    signal = audio.load(path)
    # "fast" pretrains the manager for 300 steps; 20 keep this test at seconds on two shared cores.
    tiny = replace(PRESETS["fast"], pretrain_steps=20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "test-audio", tiny)
        result = fit(signal, FitOptions(preset="test-audio", steps=30, device="cpu"),
                     cache_dir=folder)
    yield signal, result


def test_fit_improves_over_untrained(fitted: tuple[AudioSignal, FitResult]) -> None:
    signal, result = fitted
    untrained = signal.evaluate(build_model(signal, FitOptions(device="cpu")).eval())
    assert set(result.metrics) == {"mse"}
    assert math.isfinite(result.metrics["mse"])
    assert result.metrics["mse"] < untrained["mse"]
    assert result.config["signal"] == signal.meta()
    assert all(math.isfinite(p.metric) for p in result.history)


@pytest.mark.parametrize("rate", [None, 22050, 96000, 1])
def test_reconstruction_at_any_rate(
    fitted: tuple[AudioSignal, FitResult], rate: int | None
) -> None:
    signal, result = fitted
    meta = signal.meta()
    out = audio.reconstruction(result.model, meta, sample_rate=rate)
    assert (out.media_type, out.suffix) == ("audio/wav", ".wav")
    wave, got_rate = sf.read(io.BytesIO(out.data), dtype="float32")
    info = sf.info(io.BytesIO(out.data))
    expected_rate = rate or meta["sample_rate"]
    assert got_rate == expected_rate and info.subtype == "PCM_16"
    assert len(wave) == max(1, round(EXCERPT * expected_rate / meta["sample_rate"]))


def test_reconstruction_restores_loudness(fitted: tuple[AudioSignal, FitResult]) -> None:
    signal, result = fitted
    meta = signal.meta()
    assert meta["scale"] < 1.0  # the excerpt is quieter than full scale: the test means something
    out = audio.reconstruction(result.model, meta, encoding="float32")
    assert sf.info(io.BytesIO(out.data)).subtype == "FLOAT"
    wave, _ = sf.read(io.BytesIO(out.data), dtype="float32")
    predicted, _ = result.model.predict(signal.grid.coords())
    np.testing.assert_allclose(wave / meta["scale"], predicted[:, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("query", [{"sample_rate": 0}, {"sample_rate": 384_001},
                                   {"sample_rate": 22050.5}, {"encoding": "mp3"}])
def test_reconstruction_rejects_bad_queries(
    fitted: tuple[AudioSignal, FitResult], query: dict[str, Any]
) -> None:
    signal, result = fitted
    with pytest.raises(ValueError):
        audio.reconstruction(result.model, signal.meta(), **query)


def test_experts_json(fitted: tuple[AudioSignal, FitResult]) -> None:
    signal, result = fitted
    out = audio.experts(result.model, signal.meta(), sample_rate=22050)
    assert out.media_type == "application/json"
    body = json.loads(out.data)
    ids = body["expert_ids"]
    assert body["sample_rate"] == 22050 and len(ids) == EXCERPT // 2
    assert set(ids) <= set(range(result.model.n_experts))
    segments = body["segments"]
    assert segments[0]["start_s"] == 0.0
    assert segments[-1]["end_s"] == pytest.approx(len(ids) / 22050)
    for before, after in zip(segments, segments[1:], strict=False):
        assert before["end_s"] == after["start_s"] and before["expert"] != after["expert"]
    # Expanding the runs gives back the per-sample ids.
    expanded = [s["expert"] for s in segments
                for _ in range(round((s["end_s"] - s["start_s"]) * 22050))]
    assert expanded == ids


def test_expert_segments_run_length() -> None:
    segments = audio.expert_segments(np.array([1, 1, 0, 0, 0, 1]), 2)
    assert segments == [
        {"start_s": 0.0, "end_s": 1.0, "expert": 1},
        {"start_s": 1.0, "end_s": 2.5, "expert": 0},
        {"start_s": 2.5, "end_s": 3.0, "expert": 1},
    ]


@pytest.mark.parametrize("rate", [None, 8000])
def test_experts_png(fitted: tuple[AudioSignal, FitResult], rate: int | None) -> None:
    signal, result = fitted
    out = audio.experts(result.model, signal.meta(), sample_rate=rate, format="png")
    assert (out.media_type, out.suffix) == ("image/png", ".png")
    with Image.open(io.BytesIO(out.data)) as img:
        assert (img.format, img.size, img.mode) == ("PNG", (1200, 300), "RGB")
        pixels = np.asarray(img)
    background = (pixels == 255).all(axis=-1) | (pixels == audio.PLOT_AXIS).all(axis=-1)
    drawn = ~background
    assert drawn.any(axis=0).all()  # the line reaches every column
    palette = {tuple(c) for c in expert_colors(np.arange(result.model.n_experts))}
    assert {tuple(c) for c in pixels[drawn]} <= palette


def test_experts_rejects_unknown_format(fitted: tuple[AudioSignal, FitResult]) -> None:
    signal, result = fitted
    with pytest.raises(ValueError):
        audio.experts(result.model, signal.meta(), format="svg")


def test_write_outputs(fitted: tuple[AudioSignal, FitResult], tmp_path: Path) -> None:
    signal, result = fitted
    paths = audio.KIND.write_outputs(result.model, signal.meta(), tmp_path)
    assert [p.name for p in paths] == ["reconstruction.wav", "experts.png"]
    info = sf.info(paths[0])
    assert (info.samplerate, info.frames) == (signal.meta()["sample_rate"], EXCERPT)
    with Image.open(paths[1]) as img:
        assert img.size == (1200, 300)

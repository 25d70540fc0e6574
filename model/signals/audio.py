"""Audio: WAV / FLAC / OGG, mono or stereo, any sample rate, read with soundfile.

docs/method.md#audio is the only protocol: channels averaged to mono, amplitude divided by
max |x|, coordinates linspace(-100, 100, N). The divisor is kept in meta() as `scale` so renders
can restore the original loudness.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
import torch
from torch import Tensor

from model.network import NeuralExperts
from model.render import Rendered, expert_colors, png
from model.signals.base import (
    Batch,
    Cap,
    Grid,
    Option,
    Output,
    SampledSignal,
    SignalError,
    SignalKind,
    register,
)

MAX_SECONDS = 600.0  # default duration cap: 10 min at 48 kHz is ~29M samples, ~115 MB as float32
MAX_SAMPLE_RATE = 384_000  # the highest rate common audio hardware offers; above it is a typo
SERVICE_SAMPLE_RATE = 192_000  # the service's render cap: studio rates, half the longest render
COORD_LIMIT = 100.0  # docs/method.md#audio: coordinates linspace(-100, 100, N)
FORMATS = ("WAV", "WAVEX", "FLAC", "OGG")  # libsndfile also reads AIFF, MP3...: not offered
PREDICT_CHUNK = 1 << 16  # audio has many 1-D points: big chunks, still only ~64 MB of activations
ENCODINGS = {"pcm16": "PCM_16", "float32": "FLOAT"}  # reconstruction WAV sample formats
PLOT_WIDTH, PLOT_HEIGHT = 1200, 300
PLOT_AXIS = (220, 220, 220)  # light grey zero line behind the waveform


def _sniff(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head.startswith(b"fLaC"):
        return ".flac"
    return ".ogg" if head.startswith(b"OggS") else None


def _open_error(path: Path, e: sf.LibsndfileError) -> SignalError:
    # error_string is libsndfile's reason alone; str(e) would repeat the server-side path.
    return SignalError(f"{path.name}: not a readable audio file ({e.error_string})", "undecodable")


def read_audio(path: Path, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int, int]:
    """(mono waveform float32 (N,), sample rate, channels of the file), not yet normalised."""
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError as e:
        raise _open_error(path, e) from e
    if info.format not in FORMATS:
        raise SignalError(f"{path.name}: {info.format} audio is not supported", "unsupported_type")
    if info.samplerate > MAX_SAMPLE_RATE:  # a lying header: no render could play it back
        raise SignalError(f"{path.name}: a sample rate of {info.samplerate:,} Hz is over "
                          f"{MAX_SAMPLE_RATE:,} Hz", "unsupported_sample_rate")
    # Refuse from the header, before decoding anything: the cap bounds memory and fit time.
    max_frames = int(max_seconds * info.samplerate)
    if info.frames > max_frames:
        raise _too_long(path, info.frames / info.samplerate, max_seconds)
    try:
        # Read at most one frame past the cap, so a header that under-reports cannot overrun it.
        data, _ = sf.read(str(path), frames=max_frames + 1, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise _open_error(path, e) from e
    if data.shape[0] > max_frames:
        raise _too_long(path, data.shape[0] / info.samplerate, max_seconds)
    if data.shape[0] == 0:
        raise SignalError(f"{path.name}: the file holds no samples", "empty_audio")
    if not np.isfinite(data).all():
        raise SignalError(f"{path.name}: the samples contain NaN or infinity", "non_finite")
    mono = data.mean(axis=1)  # docs/method.md#audio: stereo averaged to mono
    return mono, info.samplerate, info.channels


def _too_long(path: Path, seconds: float, max_seconds: float) -> SignalError:
    return SignalError(
        f"{path.name}: {seconds:.1f} s is over the {max_seconds:g} s cap", "too_long"
    )


@dataclass
class AudioSignal(SampledSignal):
    samples: Tensor  # (N, 1), divided by `scale` so max |x| = 1
    grid: Grid  # (N,) over [-100, 100]
    sample_rate: int
    channels: int  # of the original file; the fit is always mono
    scale: float  # max |x| of the mono waveform before normalising
    kind: str = "audio"
    task: str = "audio"
    in_dim: int = 1
    out_dim: int = 1

    def meta(self) -> dict[str, Any]:
        n = self.samples.shape[0]
        return {
            "sample_rate": self.sample_rate, "samples": n, "channels": self.channels,
            "scale": self.scale, "duration_s": n / self.sample_rate,
        }

    def grid_values(self) -> Tensor:
        return self.samples

    def progress_metric(self, values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        return self.argmax_mse(values, logits, batch)

    def evaluate(self, model: NeuralExperts) -> dict[str, float]:
        """docs/method.md#audio: MSE of the argmax output vs the normalised waveform, all samples."""
        predicted, _ = model.predict(self.grid.coords(self.samples.device), chunk=PREDICT_CHUNK)
        return {"mse": float(((predicted.double() - self.samples.double()) ** 2).mean())}


def load(path: Path, protocol: str | None = None, device: str = "cpu",
         max_seconds: float = MAX_SECONDS) -> AudioSignal:
    if not 0 < max_seconds < math.inf:
        raise SignalError(f"max_seconds must be a positive number, got {max_seconds}",
                          "invalid_option")
    mono, sample_rate, channels = read_audio(path, max_seconds)
    scale = float(np.abs(mono).max())
    if scale == 0:
        raise SignalError(f"{path.name}: the audio is silent (every sample is 0)", "empty_audio")
    samples = torch.from_numpy(mono / scale).to(device)[:, None]
    return AudioSignal(samples, Grid((mono.shape[0],), -COORD_LIMIT, COORD_LIMIT), sample_rate,
                       channels, scale)


# --------------------------------------------------------------------------- outputs


def _samples_at(meta: dict[str, Any], sample_rate: int | None) -> tuple[int, int]:
    """(rate, sample count) of a render: the same duration, resampled by the INR itself."""
    rate = meta["sample_rate"] if sample_rate is None else sample_rate
    if not isinstance(rate, int) or not 1 <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be an integer in 1..{MAX_SAMPLE_RATE}, got {rate!r}")
    return rate, max(1, round(meta["samples"] * rate / meta["sample_rate"]))


def _predict(model: NeuralExperts, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised waveform (n,) and expert ids (n,) at n points spanning the clip."""
    device = next(model.parameters()).device
    grid = Grid((n,), -COORD_LIMIT, COORD_LIMIT)
    values, ids = model.predict(grid.coords(device), chunk=PREDICT_CHUNK)
    return values[:, 0].cpu().numpy(), ids.cpu().numpy()


def reconstruction(model: NeuralExperts, meta: dict[str, Any], sample_rate: int | None = None,
                   encoding: str = "pcm16") -> Rendered:
    """The clip as a WAV at any sample rate (the INR is continuous in time), at its own loudness."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    rate, n = _samples_at(meta, sample_rate)
    wave, _ = _predict(model, n)
    wave = wave * meta["scale"]
    if encoding == "pcm16":
        # libsndfile wraps around, not clips, when converting floats past +-1 to integers.
        wave = np.clip(wave, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, subtype=ENCODINGS[encoding], format="WAV")
    return Rendered(buf.getvalue(), "audio/wav", ".wav")


def expert_segments(ids: np.ndarray, rate: int) -> list[dict[str, Any]]:
    """Runs of one expert as [start_s, end_s) spans: sample i lies at i / rate seconds."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
    ends = np.append(starts[1:], len(ids))
    return [
        {"start_s": int(s) / rate, "end_s": int(e) / rate, "expert": int(ids[s])}
        for s, e in zip(starts, ends, strict=True)
    ]


def experts(model: NeuralExperts, meta: dict[str, Any], sample_rate: int | None = None,
            format: str = "json") -> Rendered:
    """Which expert owns each sample: JSON ids and their runs, or a PNG of the coloured waveform."""
    if format not in ("json", "png"):
        raise ValueError(f"unknown format {format!r}; choose json or png")
    rate, n = _samples_at(meta, sample_rate)
    wave, ids = _predict(model, n)
    if format == "png":
        return _plot(wave, ids)
    body = {"sample_rate": rate, "expert_ids": ids.tolist(), "segments": expert_segments(ids, rate)}
    return Rendered(json.dumps(body, separators=(",", ":")).encode(), "application/json", ".json")


def _plot(wave: np.ndarray, ids: np.ndarray) -> Rendered:
    """The normalised waveform as a line, each stretch in its expert's colour."""
    if len(wave) < PLOT_WIDTH:
        # Fewer samples than columns: interpolate linearly between them, as a line plot would.
        at = np.linspace(0, len(wave) - 1, PLOT_WIDTH)
        wave, ids = np.interp(at, np.arange(len(wave)), wave), ids[np.rint(at).astype(int)]
    rows = np.rint((1 - np.clip(wave, -1, 1)) / 2 * (PLOT_HEIGHT - 1)).astype(np.int64)
    # Each sample covers the rows back to its predecessor, so the line has no vertical gaps.
    prev = np.concatenate([rows[:1], rows[:-1]])
    k = int(ids.max()) + 1
    cell = (np.arange(len(rows)) * PLOT_WIDTH // len(rows)) * k + ids  # (column, expert)
    top = np.full(PLOT_WIDTH * k, PLOT_HEIGHT, dtype=np.int64)
    bottom = np.full(PLOT_WIDTH * k, -1, dtype=np.int64)
    np.minimum.at(top, cell, np.minimum(rows, prev))
    np.maximum.at(bottom, cell, np.maximum(rows, prev))
    pixels = np.full((PLOT_HEIGHT, PLOT_WIDTH, 3), 255, dtype=np.uint8)
    pixels[PLOT_HEIGHT // 2, :] = PLOT_AXIS
    colors = expert_colors(np.arange(k))
    for c in np.flatnonzero(bottom >= 0):
        column, expert = divmod(int(c), k)
        pixels[top[c] : bottom[c] + 1, column] = colors[expert]
    return png(pixels)


def write_outputs(model: NeuralExperts, meta: dict[str, Any], folder: Path) -> list[Path]:
    written = []
    for name, out in (("reconstruction", reconstruction(model, meta)),
                      ("experts", experts(model, meta, format="png"))):
        path = folder / f"{name}{out.suffix}"
        path.write_bytes(out.data)
        written.append(path)
    return written


SAMPLE_RATE = Option("sample_rate", int, "Hz (default: the input's)", minimum=1,
                     cap="max_sample_rate")

KIND = register(
    SignalKind(
        name="audio",
        label="audio",
        description="WAV, FLAC or OGG, mono or stereo (averaged), any rate, up to the duration cap",
        coordinates="time in [-100, 100]",
        suffixes=(".wav", ".flac", ".ogg"),
        sniff=_sniff,
        loader=load,
        write_outputs=write_outputs,
        # bench/RESULTS.md (bench:realsize): 300 to 439 steps of a minute of speech in 80 to 120 s
        # on 2-core CPUs.
        cpu_step_s=0.3,
        metric_name="mse",
        outputs={
            "reconstruction": Output(
                reconstruction, "WAV at any sample rate", ("audio/wav",),
                (SAMPLE_RATE, Option("encoding", str, "the WAV's samples", choices=tuple(ENCODINGS),
                                     cli=False)),
                suffixes=(".wav",)),
            "experts": Output(
                experts, "per-sample expert ids and their runs as JSON, or a PNG plot",
                ("application/json", "image/png"),
                (SAMPLE_RATE, Option("format", str, "json: ids and runs; png: a plot",
                                     choices=("json", "png"), from_suffix=True)),
                suffixes=(".json", ".png")),
        },
        media_family="audio",
        media_types={".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"},
        caps=(
            Cap("max_audio_seconds", MAX_SECONDS, "audio duration cap", load_option="max_seconds"),
            Cap("max_sample_rate", SERVICE_SAMPLE_RATE, "largest sample rate of a rendered clip"),
        ),
    )
)

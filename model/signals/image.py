"""Images: PNG / JPEG / WebP, gray or RGB, any size. Coordinates and pixels on [-1, 1].

The paper's protocol (Lanczos downscale by 4, centre crop 128 x 128) is the `protocol="paper"`
option; without it an image is fitted at its own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage.metrics import structural_similarity
from torch import Tensor

from model.network import NeuralExperts
from model.render import Rendered, expert_colors, png, to_uint8
from model.signals.base import (
    Batch,
    Cap,
    Grid,
    Option,
    Output,
    PoorResult,
    SampledSignal,
    SignalError,
    SignalKind,
    register,
)

MAX_PIXELS = 4096 * 4096  # decompression-bomb guard: refuse before decoding larger images
MAX_RENDER_PIXELS = 8192 * 8192  # a 67-megapixel render holds ~2.5 GB while it runs (the API caps lower)
# The service's render cap: a render at the cap must end within its render time limit (60 s). A
# 2-core EPYC renders an image model of the default size (neural-experts, 128 wide, 4 experts) at
# ~105k pixels/s on one thread; with two renders side by side each gets one core: 60 s x 105k =
# 6.3M pixels, less a third for PNG encoding and a busy machine. Faster hardware takes a higher cap.
SERVICE_RENDER_PIXELS = 2048 * 2048
PAPER_DOWNSCALE = 4
PAPER_CROP = 128


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    return ".webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def read_image(path: Path, protocol: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Pixels as float32 (H, W, C) on [-1, 1], C = 1 (gray) or 3 (RGB)."""
    try:
        with Image.open(path) as img:
            if img.format not in ("PNG", "JPEG", "WEBP"):
                raise SignalError(f"{path.name}: {img.format} images are not supported", "unsupported_type")
            if img.width * img.height > max_pixels:
                raise SignalError(
                    f"{path.name}: {img.width}x{img.height} is over the {max_pixels:,}-pixel cap",
                    "too_large",
                )
            shown = ImageOps.exif_transpose(img)  # a phone photo's pixels as it is shown
            white = _gray_white(shown.mode)
            decoded = shown.convert("RGB" if white is None else "F")
            if protocol == "paper":
                decoded = _paper_crop(decoded, path)
            pixels = np.asarray(decoded, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, SignalError):
            raise
        # PIL's messages name the whole path: keep only the file's name (it may reach a client).
        reason = str(e).replace(str(path), path.name)
        raise SignalError(f"{path.name}: not a readable image ({reason})", "undecodable") from e
    except Image.DecompressionBombError as e:
        raise SignalError(f"{path.name}: {e}", "too_large") from e
    pixels = pixels[..., None] / white if white is not None else pixels / 255.0
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise SignalError(f"{path.name}: an image needs at least 2x2 pixels", "too_small")
    return pixels * 2.0 - 1.0


def _gray_white(mode: str) -> float | None:
    """The white level of a grayscale mode (16-bit PNGs open as "I;16" or "I"), None for colour
    modes, which convert to 8-bit RGB. By mode, not by the largest value: a dark 16-bit image is
    not an 8-bit one."""
    if mode in ("1", "L", "LA"):
        return 255.0
    if mode == "I" or mode.startswith("I;16"):
        return 65535.0
    return None


def _paper_crop(img: Image.Image, path: Path) -> Image.Image:
    """docs/method.md#images: Lanczos downscale by 4, then the centre 128 x 128 crop."""
    small = img.resize(
        (img.width // PAPER_DOWNSCALE, img.height // PAPER_DOWNSCALE), Image.Resampling.LANCZOS
    )
    if small.width < PAPER_CROP or small.height < PAPER_CROP:
        raise SignalError(
            f"{path.name}: the paper protocol needs at least {PAPER_CROP * PAPER_DOWNSCALE} px a side",
            "too_small",
        )
    left, top = (small.width - PAPER_CROP) // 2, (small.height - PAPER_CROP) // 2
    return small.crop((left, top, left + PAPER_CROP, top + PAPER_CROP))


@dataclass
class ImageSignal(SampledSignal):
    pixels: Tensor  # (H * W, C) on [-1, 1], row-major
    grid: Grid
    protocol: str | None
    kind: str = "image"
    task: str = "image"
    in_dim: int = 2

    @property
    def out_dim(self) -> int:
        return self.pixels.shape[1]

    def meta(self) -> dict[str, Any]:
        height, width = self.grid.shape
        return {"height": height, "width": width, "channels": self.out_dim, "protocol": self.protocol}

    def grid_values(self) -> Tensor:
        return self.pixels

    def progress_metric(self, values: Tensor, logits: Tensor | None, batch: Batch) -> float:
        mse = self.argmax_mse(values, logits, batch)
        return psnr(mse / 4.0, peak=1.0)  # [-1, 1] -> [0, 1] divides the MSE by 4

    def evaluate(self, model: NeuralExperts) -> dict[str, float]:
        predicted, _ = model.predict(self.grid.coords(self.pixels.device))
        return image_metrics(predicted.cpu().numpy(), self.pixels.cpu().numpy(), self.grid.shape)


def psnr(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def image_metrics(predicted: np.ndarray, target: np.ndarray, shape: tuple[int, ...]) -> dict[str, float]:
    """psnr on [0, 1], psnr_paper on [-1, 1] with peak max|gt| (the paper's code), ssim on [0, 1].

    Both PSNRs use the unclipped prediction, so they differ by exactly 20 log10(2 / max|gt|).
    """
    mse = float(np.mean((predicted - target) ** 2, dtype=np.float64))
    height, width = shape
    a = np.clip((predicted + 1) / 2, 0, 1).reshape(height, width, -1)
    b = ((target + 1) / 2).reshape(height, width, -1)
    return {
        "psnr": psnr(mse / 4.0, peak=1.0),
        "psnr_paper": psnr(mse, peak=float(np.abs(target).max())),
        "ssim": float(structural_similarity(a, b, channel_axis=-1, data_range=1.0)),
    }


def load(path: Path, protocol: str | None = None, device: str = "cpu",
         max_pixels: int = MAX_PIXELS) -> ImageSignal:
    pixels = read_image(path, protocol, max_pixels)
    height, width, channels = pixels.shape
    values = torch.from_numpy(pixels.reshape(-1, channels).copy()).to(device)
    return ImageSignal(values, Grid((height, width), -1.0, 1.0), protocol)


# --------------------------------------------------------------------------- outputs


def _predict_grid(model: NeuralExperts, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    if width * height > MAX_RENDER_PIXELS:
        raise ValueError(f"{width}x{height} is over the {MAX_RENDER_PIXELS:,}-pixel cap of a render")
    device = next(model.parameters()).device
    values, ids = model.predict(Grid((height, width), -1.0, 1.0).coords(device))
    return values.cpu().numpy().reshape(height, width, -1), ids.cpu().numpy().reshape(height, width)


def _size(meta: dict[str, Any], width: int | None, height: int | None) -> tuple[int, int]:
    return (meta["width"] if width is None else width, meta["height"] if height is None else height)


def reconstruction(model: NeuralExperts, meta: dict[str, Any], width: int | None = None,
                   height: int | None = None) -> Rendered:
    """The image at any size (a larger one is super-resolution: the INR is continuous)."""
    values, _ = _predict_grid(model, *_size(meta, width, height))
    pixels = to_uint8(values)
    return png(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def experts(model: NeuralExperts, meta: dict[str, Any], width: int | None = None,
            height: int | None = None) -> Rendered:
    """Colour-coded map of which expert owns each pixel."""
    _, ids = _predict_grid(model, *_size(meta, width, height))
    return png(expert_colors(ids))


def write_outputs(model: NeuralExperts, meta: dict[str, Any], folder: Path) -> list[Path]:
    written = []
    for name, render in (("reconstruction", reconstruction), ("experts", experts)):
        out = render(model, meta)
        path = folder / f"{name}{out.suffix}"
        path.write_bytes(out.data)
        written.append(path)
    return written


def _render_pixels(query: dict[str, Any], meta: dict[str, Any]) -> tuple[float, str]:
    """A render's pixels, the input's own size included (the default size costs as much)."""
    width, height = _size(meta, query.get("width"), query.get("height"))
    return width * height, f"{width * height:,} pixels"


def _shrink_to_pixels(query: dict[str, Any], meta: dict[str, Any], limit: float) -> dict[str, Any]:
    """A render left at the input's own size, scaled down to at most `limit` pixels with its
    aspect kept: a 12-megapixel phone photo under the 2048 x 2048 cap renders at 2364 x 1773."""
    width, height = meta["width"], meta["height"]
    if "width" in query or "height" in query or width * height <= limit:
        return query
    scale = math.sqrt(limit / (width * height))
    return {**query, "width": max(1, math.floor(width * scale)),
            "height": max(1, math.floor(height * scale))}


SIZE = (
    Option("width", int, "pixels across (default: the input's)", minimum=1),
    Option("height", int, "pixels down (default: the input's)", minimum=1),
)

KIND = register(
    SignalKind(
        name="image",
        label="image",
        description="PNG, JPEG or WebP, gray or colour, any size up to the pixel cap",
        coordinates="(row, column) in [-1, 1]^2",
        suffixes=(".png", ".jpg", ".jpeg", ".webp"),
        sniff=_sniff,
        loader=load,
        write_outputs=write_outputs,
        # bench/RESULTS.md (bench:fast): 300 steps of a Kodak image in ~85 s on a 2-core CPU.
        cpu_step_s=0.29,
        metric_name="psnr",
        protocols=("paper",),
        outputs={
            "reconstruction": Output(reconstruction, "PNG at any size", ("image/png",), SIZE,
                                     suffixes=(".png",)),
            "experts": Output(experts, "which expert owns each pixel, as a PNG", ("image/png",),
                              SIZE, suffixes=(".png",)),
        },
        media_family="image",
        media_types={".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                     ".webp": "image/webp"},
        caps=(
            Cap("max_image_pixels", MAX_PIXELS, "decoded image cap (decompression bombs)",
                load_option="max_pixels"),
            Cap("max_render_pixels", SERVICE_RENDER_PIXELS, "largest width x height of a "
                "rendered image, the input's size included (default 2048 x 2048: what renders "
                "within the render time limit); a render left at the input's size is scaled "
                "down to it", measure=_render_pixels, shrink=_shrink_to_pixels),
        ),
        poor_results=(
            PoorResult("psnr", 20.0, "The reconstruction is far from the image",
                       "try more steps, or the fast preset's default."),
        ),
    )
)

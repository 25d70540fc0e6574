"""Image signals: formats, modes, the paper protocol, renders at any size, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.network import NeuralExperts
from model.presets import model_config
from model.signals import SignalError, kind_of, load_signal
from model.signals.image import experts, reconstruction
from tests.utils.data import KODIM19


def test_paper_protocol_is_lanczos_quarter_then_centre_crop() -> None:
    signal = load_signal(KODIM19, protocol="paper")
    assert signal.meta() == {"height": 128, "width": 128, "channels": 3, "protocol": "paper"}
    with Image.open(KODIM19) as img:
        small = img.resize((img.width // 4, img.height // 4), Image.Resampling.LANCZOS)
    left, top = (small.width - 128) // 2, (small.height - 128) // 2
    expected = np.asarray(small.crop((left, top, left + 128, top + 128)), np.float32) / 127.5 - 1
    np.testing.assert_allclose(signal.pixels.numpy().reshape(128, 128, 3), expected, atol=1e-6)
    coords = signal.grid.coords()
    assert coords.min() == -1 and coords.max() == 1 and coords.shape == (128 * 128, 2)


@pytest.mark.parametrize(("mode", "fmt", "channels"), [
    ("L", "PNG", 1), ("RGB", "JPEG", 3), ("RGBA", "WEBP", 3), ("P", "PNG", 3), ("I;16", "PNG", 1),
])
def test_modes_and_formats(tmp_path: Path, mode: str, fmt: str, channels: int) -> None:
    path = tmp_path / "img.bin"  # no extension: the content decides
    Image.new(mode, (20, 10)).save(path, format=fmt)
    signal = load_signal(path)
    assert kind_of(path).name == "image"
    assert signal.meta()["channels"] == channels and signal.grid.shape == (10, 20)
    assert signal.pixels.min() >= -1 and signal.pixels.max() <= 1


def test_a_16_bit_image_is_scaled_by_its_depth_not_its_values(tmp_path: Path) -> None:
    levels = np.array([[0, 255], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    Image.fromarray(levels // 256).save(tmp_path / "dark.png")  # still 16-bit, every value <= 255
    deep, dark = load_signal(tmp_path / "deep.png"), load_signal(tmp_path / "dark.png")
    torch.testing.assert_close(deep.pixels[:, 0], torch.tensor(levels.ravel() / 65535 * 2 - 1).float())
    assert float(dark.pixels.max()) < -0.99  # near black, as any viewer shows it


def test_a_photo_is_read_the_way_up_its_exif_orientation_says(tmp_path: Path) -> None:
    stored = Image.new("RGB", (6, 4))
    stored.paste((255, 255, 255), (0, 0, 6, 1))  # a white top row as stored
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    signal = load_signal(tmp_path / "phone.jpg")
    assert signal.grid.shape == (6, 4)  # shown portrait: 4 wide, 6 high
    shown = signal.pixels.reshape(6, 4, 3).mean(-1)
    assert float(shown[:, -1].min()) > 0.8 and float(shown[:, 0].max()) < -0.8  # the stored top is now right


def test_renders_at_any_size_including_super_resolution() -> None:
    net = NeuralExperts(model_config("neural-experts", "image", 2, 3)).eval()
    meta = {"height": 16, "width": 24, "channels": 3}
    for width, height in ((24, 16), (96, 64), (7, 3)):
        with Image.open(io.BytesIO(reconstruction(net, meta, width, height).data)) as img:
            assert img.size == (width, height) and img.mode == "RGB"
        with Image.open(io.BytesIO(experts(net, meta, width, height).data)) as img:
            assert img.size == (width, height)
    with pytest.raises(ValueError, match="width and height"):
        reconstruction(net, meta, 0, 5)


def test_gray_model_renders_gray() -> None:
    torch.manual_seed(0)
    net = NeuralExperts(model_config("siren", "image", 2, 1)).eval()
    with Image.open(io.BytesIO(reconstruction(net, {"height": 8, "width": 8}).data)) as img:
        assert img.mode == "L" and img.size == (8, 8)


def _truncated_png(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[:60])


def _bomb(path: Path) -> None:
    Image.new("1", (5000, 5000)).save(path, format="PNG")  # 25 Mpx, a few kB on disk


@pytest.mark.parametrize(("write", "code", "options"), [
    (lambda p: p.write_bytes(b""), "empty_file", {}),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50), "undecodable", {}),
    (_truncated_png, "undecodable", {}),
    (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "too_small", {}),
    (lambda p: Image.new("RGB", (100, 100)).save(p, format="PNG"), "too_small", {"protocol": "paper"}),
    (lambda p: Image.new("RGB", (100, 100)).save(p, format="PNG"), "invalid_option", {"protocol": "x"}),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="GIF"), "unsupported_type", {}),
    (_bomb, "too_large", {}),
])
def test_bad_images_raise_a_coded_error(tmp_path: Path, write, code: str, options: dict) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.png"
    write(path)
    with pytest.raises(SignalError) as err:
        load_signal(path, **options)
    assert err.value.code == code, err.value.detail
    assert "\n" not in str(err.value)

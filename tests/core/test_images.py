import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lors_distill.core.images import (
    BACKGROUND,
    ImageDecodeError,
    decode_image,
    hwc_to_tensor,
    image_grid,
    png_bytes,
    resize_square,
)


def two_tone(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_center_crop_keeps_the_middle():
    # 40x10 image: red left, blue right; a 10x10 centre crop straddles the boundary
    out = resize_square(two_tone(40, 10), 10, "center_crop")
    assert out.shape == (10, 10, 3)
    assert out.dtype == np.uint8
    assert out[5, 1, 0] > 200  # red just left of the centre
    assert out[5, 8, 2] > 200  # blue just right of it


def test_pad_keeps_everything_and_pads_black():
    out = resize_square(two_tone(40, 10), 20, "pad")
    assert out.shape == (20, 20, 3)
    assert out[0].max() == 0  # top rows are padding
    assert out[10, 1, 0] > 200  # left edge is still red: nothing cropped
    assert out[10, 18, 2] > 200


def test_squash_maps_whole_image():
    out = resize_square(two_tone(40, 10), 8, "squash")
    assert out[4, 0, 0] > 200
    assert out[4, 7, 2] > 200
    assert out[0].max() > 0  # no padding


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown resize policy 'stretch'"):
        resize_square(two_tone(4, 4), 4, "stretch")


def test_decode_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        decode_image(bad)
    truncated = tmp_path / "truncated.jpg"
    two_tone(64, 64).save(truncated, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        decode_image(truncated)


def test_layout_and_grid():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    tensor = hwc_to_tensor(images)
    assert tensor.shape == (2, 3, 4, 4)
    assert torch.equal(tensor[1, 2], torch.from_numpy(images[1, :, :, 2]))
    grid = image_grid(tensor, columns=2, padding=1)
    assert grid.shape == (1 * 5 + 1, 2 * 5 + 1, 3)
    assert np.array_equal(grid[1:5, 6:10], images[1])
    assert png_bytes(grid).startswith(b"\x89PNG")


# ------------------------------------------------------------------ modes and limits


def write_png(path, width: int, height: int, depth: int, color: int, raw: bytes) -> None:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): ``raw`` is the filtered scanline
    data (each row led by filter byte 0)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def gradient16(width: int = 64, height: int = 16) -> np.ndarray:
    """A 0..65535 horizontal ramp (uint16), the same in every row."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(gradient16()).save(path)
    assert Image.open(path).mode == "I;16"
    out = np.asarray(decode_image(path))
    assert out.shape == (16, 64, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, -1].tolist() == [255, 255, 255]
    assert abs(out.mean() - 127.5) < 1.0  # Pillow's own convert("RGB") gives ~254 (clipped)
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)  # still a ramp


def test_sixteen_bit_rgb_is_scaled(tmp_path):
    ramp = gradient16()
    rgb = np.stack([ramp, 65535 - ramp, np.full_like(ramp, 32896)], -1).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)
    path = tmp_path / "rgb16.png"
    write_png(path, 64, 16, 16, 2, raw)
    out = np.asarray(decode_image(path)).astype(int)
    expected = np.rint(rgb.astype(np.float64) * 255 / 65535)
    assert np.abs(out - expected).max() <= 1
    assert abs(out[..., 0].mean() - 127.5) < 1.0


def test_float_images_are_read_as_zero_to_one(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8), "F").save(path)
    out = np.asarray(decode_image(path))
    assert out[0, 0, 0] == 0
    assert out[-1, -1, 0] == 255
    assert abs(out.mean() - 127.5) < 1.0


def test_transparency_is_composited_onto_the_background(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # hidden red under alpha 0 ...
    rgba[:, 2:, 3] = 255  # ... shown on the right half
    rgba[0, 0, 3] = 128  # half-transparent red over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(decode_image(tmp_path / "rgba.png"))
    assert out[1, 0].tolist() == list(BACKGROUND)  # fully transparent: background, not red
    assert out[1, 3].tolist() == [255, 0, 0]
    assert out[0, 0, 0] == 255
    assert abs(int(out[0, 0, 1]) - 127) <= 1
    la = np.stack([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)], -1)
    la[:, 2:, 1] = 255  # black, transparent on the left
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = np.asarray(decode_image(tmp_path / "la.png"))
    assert out[0, 0].tolist() == list(BACKGROUND)
    assert out[0, 3].tolist() == [0, 0, 0]
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)  # index 0 (red) is transparent
    out = np.asarray(decode_image(tmp_path / "palette.png"))
    assert out[0, 0].tolist() == list(BACKGROUND)
    assert out[0, 1].tolist() == [0, 0, 255]


def test_cmyk_and_palette_convert_to_rgb(tmp_path):
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:, 4:, 0] = 255  # right half: full cyan
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    out = np.asarray(decode_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(out[4, 1] - [255, 255, 255]).max() <= 3  # no ink: white
    assert np.abs(out[4, 6] - [0, 255, 255]).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    two_tone(40, 10).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = np.asarray(decode_image(tmp_path / "rotated.jpg"))
    assert out.shape == (40, 10, 3)  # upright: 10 wide, 40 tall
    assert out[2, 5, 0] > 200
    assert out[-3, 5, 2] > 200


def test_pixel_limit_refuses_before_decoding(tmp_path):
    # a 12000 x 12000 header over almost no data: refused from the header alone
    bomb = tmp_path / "bomb.png"
    write_png(bomb, 12000, 12000, 1, 0, b"\x00" * 10)
    with pytest.raises(ImageDecodeError, match=r"bomb\.png is 12000 x 12000") as info:
        decode_image(bomb, max_pixels=100_000_000)
    assert info.value.reason == "too_many_pixels"
    assert "max_image_pixels (100000000)" in str(info.value)
    small = tmp_path / "small.png"
    two_tone(20, 10).save(small)
    with pytest.raises(ImageDecodeError, match=r"20 x 10 = 200 pixels") as info:
        decode_image(small, max_pixels=199)
    assert info.value.reason == "too_many_pixels"
    assert np.asarray(decode_image(small, max_pixels=200)).shape == (10, 20, 3)
    # beyond Pillow's own hard limit, Pillow's refusal is reported the same way
    write_png(bomb, 20000, 20000, 1, 0, b"\x00" * 10)
    with pytest.raises(ImageDecodeError, match=r"bomb\.png refused as a decompression") as info:
        decode_image(bomb)
    assert info.value.reason == "too_many_pixels"

import numpy as np
import pytest
import torch
from PIL import Image

from lors_distill.core.images import (
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

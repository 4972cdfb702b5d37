"""Image decoding, resizing to a square tensor size, and contact-sheet grids."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

ResizePolicy = Literal["center_crop", "pad", "squash"]


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded (or is larger than the pixel limit).

    ``reason`` is the bad-record category of the ingestion report.
    """

    def __init__(self, message: str, reason: str = "undecodable_image") -> None:
        super().__init__(message)
        self.reason = reason


BACKGROUND = (255, 255, 255)
"""Transparent pixels (LA, RGBA, PA, palette or RGB with a transparency key) are composited onto
this colour (white), so what an alpha channel hides never shows."""

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPARENT = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB, scaling rather than clipping.

    * 16-bit (``I;16*``, and ``I``, Pillow's mode for 16-bit data): ``0..65535 -> 0..255``;
    * float (``F``): ``0..1 -> 0..255`` (the float-image convention), clipped outside;
    * alpha (LA, RGBA, PA, or a ``transparency`` key): composited onto :data:`BACKGROUND`;
    * everything else (1, L, P, CMYK, YCbCr, LAB, HSV, RGB): Pillow's conversion.
    """
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        full_scale = 1.0 if image.mode == "F" else 65535.0
        values = np.asarray(image, dtype=np.float64) * (255.0 / full_scale)
        gray = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode in _TRANSPARENT or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file as 8-bit RGB (see :func:`to_rgb`), turned upright by
    its EXIF orientation.

    Args:
        max_pixels: refuse images with more pixels than this (read from the header, before
            decoding: a decompression bomb costs nothing).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file is not a readable image (truncated, wrong format, ...) or has
            more than ``max_pixels`` pixels.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"image {path} is {width} x {height} = {width * height} pixels, more than "
                    f"ingestion.max_image_pixels ({max_pixels})",
                    reason="too_many_pixels",
                )
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except (FileNotFoundError, ImageDecodeError):
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            f"image {path} refused as a decompression bomb: {error}", reason="too_many_pixels"
        ) from error
    except Exception as error:  # any decoder failure (OSError, SyntaxError, struct.error, ...)
        raise ImageDecodeError(f"cannot decode image {path}: {error}") from error


def resize_square(image: Image.Image, size: int, policy: ResizePolicy) -> np.ndarray:
    """Resize an RGB image to ``(size, size, 3)`` uint8.

    Args:
        image: an RGB PIL image of any size.
        size: output side length in pixels.
        policy: ``center_crop`` scales the shorter side to ``size`` and crops the centre;
            ``pad`` scales the longer side to ``size`` and pads with black (nothing is lost);
            ``squash`` resizes to ``size x size`` ignoring the aspect ratio.
    """
    width, height = image.size
    resample = Image.Resampling.BICUBIC
    if policy == "squash":
        out = image.resize((size, size), resample, reducing_gap=3.0)
    elif policy == "center_crop":
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        scaled = image.resize((new_w, new_h), resample, reducing_gap=3.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        out = scaled.crop((left, top, left + size, top + size))
    elif policy == "pad":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        scaled = image.resize((new_w, new_h), resample, reducing_gap=3.0)
        out = Image.new("RGB", (size, size))
        out.paste(scaled, ((size - new_w) // 2, (size - new_h) // 2))
    else:
        raise ValueError(f"unknown resize policy {policy!r}: use center_crop, pad or squash")
    return np.asarray(out, dtype=np.uint8)


def hwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 array -> ``(N, 3, H, W)`` uint8 tensor (contiguous)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``(N, 3, H, W)`` uint8 images into one ``(rows*H', cols*W', 3)`` uint8 array."""
    count, _, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, 3),
        255,
        dtype=np.uint8,
    )
    array = images.permute(0, 2, 3, 1).numpy()
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = array[index]
    return grid


def png_bytes(array: np.ndarray, min_side: int = 256) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG, upscaled (nearest) to at least ``min_side``."""
    image = Image.fromarray(array)
    factor = max(1, math.ceil(min_side / max(1, min(image.size))))
    if factor > 1:
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

"""Drawing a scene: Pillow at 4x resolution, box-filtered down (anti-aliased at any size)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from lors_distill.core.scenes.layout import Scene, SceneObject
from lors_distill.core.scenes.vocabulary import _BG_PALETTE, _COLOUR_RGB, _POS_RC, _SIZE_FRAC

_SIZE_JITTER = 0.02
_COLOUR_JITTER = 18
_SUPERSAMPLE = 4


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _unit_star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    pts[:, 1] += (1.0 - pts[:, 1].max()) / 2  # centre vertically
    return pts


def _unit_heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts / np.abs(pts).max()


def _unit_cross(arm: float = 0.3) -> np.ndarray:
    a = arm
    return np.array(
        [
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
        ],
        dtype=np.float64,
    )


# Polygons in unit coordinates (x right, y down, inside [-1, 1]^2).
_UNIT_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
    "triangle": np.array([(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)]),
    "star": _unit_star(),
    "diamond": np.array([(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)]),
    "cross": _unit_cross(),
    "heart": _unit_heart(),
}


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.indices((size, size))
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _jitter_rgb(rgb: Sequence[int], rng: np.random.Generator, amount: int) -> np.ndarray:
    delta = rng.integers(-amount, amount + 1, size=3)
    return np.clip(np.asarray(rgb, dtype=np.int64) + delta, 0, 255)


def _render_background(name: str, hi: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Background at the supersampled resolution, (hi, hi, 3) uint8."""
    palette = [_jitter_rgb(c, rng, 8) for c in _BG_PALETTE[name]]
    yy, xx = _grid(hi)
    # pattern period in supersampled pixels (about 1/8 of the image, at least 2 output pixels)
    period = _SUPERSAMPLE * max(2, image_size // 8)
    if name in ("grey", "sky blue", "navy", "sand"):
        img = np.broadcast_to(palette[0].astype(np.uint8), (hi, hi, 3))
        return np.ascontiguousarray(img)
    if name == "striped":
        off = int(rng.integers(period))
        mask = ((xx + yy + off) % period) < period // 2
        return np.where(mask[..., None], palette[0], palette[1]).astype(np.uint8)
    if name == "checkered":
        ox, oy = (int(v) for v in rng.integers(period, size=2))
        mask = (((xx + ox) // period) + ((yy + oy) // period)) % 2 == 0
        return np.where(mask[..., None], palette[0], palette[1]).astype(np.uint8)
    if name == "gradient":
        t = (yy[..., None] / (hi - 1)).astype(np.float64)
        top, bottom = palette[0].astype(np.float64), palette[2].astype(np.float64)
        if rng.random() < 0.5:
            top, bottom = bottom, top
        return np.clip(np.rint(top + t * (bottom - top)), 0, 255).astype(np.uint8)
    if name == "dotted":
        p = _SUPERSAMPLE * max(3, image_size // 8)
        ox, oy = (int(v) for v in rng.integers(p, size=2))
        dx = (xx + ox) % p - p / 2
        dy = (yy + oy) % p - p / 2
        mask = dx * dx + dy * dy <= (0.22 * p) ** 2
        return np.where(mask[..., None], palette[1], palette[0]).astype(np.uint8)
    if name == "grass":
        base = palette[0].astype(np.int64)
        n = hi // _SUPERSAMPLE
        fine = rng.integers(-14, 15, size=(n, n, 1))
        blades = rng.integers(-12, 13, size=(1, n, 1))  # vertical streaks
        low = np.clip(base + fine + blades, 0, 255).astype(np.uint8)
        return np.repeat(np.repeat(low, _SUPERSAMPLE, axis=0), _SUPERSAMPLE, axis=1)
    raise ValueError(f"unknown background {name!r}")


def _draw_object(
    draw: ImageDraw.ImageDraw,
    obj: SceneObject,
    cell: float,
    rng: np.random.Generator,
) -> None:
    row, col = _POS_RC[obj.position]
    frac = _SIZE_FRAC[obj.size] + rng.uniform(-_SIZE_JITTER, _SIZE_JITTER)
    half = frac * cell
    slack = max(0.0, (0.5 - frac) * cell * 0.8)
    cx = (col + 0.5) * cell + rng.uniform(-slack, slack)
    cy = (row + 0.5) * cell + rng.uniform(-slack, slack)
    fill = tuple(int(v) for v in _jitter_rgb(_COLOUR_RGB[obj.colour], rng, _COLOUR_JITTER))
    angle = rng.uniform(-0.14, 0.14)  # small rotation (radians) for polygons
    box = (cx - half, cy - half, cx + half, cy + half)
    if obj.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif obj.shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(0.42 * half)))
    else:
        pts = _UNIT_POLYGONS[obj.shape]
        cos, sin = np.cos(angle), np.sin(angle)
        x = (pts[:, 0] * cos - pts[:, 1] * sin) * half + cx
        y = (pts[:, 0] * sin + pts[:, 1] * cos) * half + cy
        draw.polygon([(float(a), float(b)) for a, b in zip(x, y, strict=True)], fill=fill)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene to an RGB image.

    The scene is drawn at 4x resolution and downsampled with a box filter (anti-aliasing).
    Object position, size, rotation and colour shade are slightly jittered from ``rng``.

    Args:
        scene: the scene to draw.
        image_size: output side length in pixels, >= 16.
        rng: source of randomness for the jitter.

    Returns:
        Image array of shape (image_size, image_size, 3), dtype uint8.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    S = _SUPERSAMPLE * image_size
    canvas = Image.fromarray(_render_background(scene.background, S, image_size, rng), "RGB")
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj, S / 3, rng)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    return np.array(small, dtype=np.uint8)

"""Deterministic synthetic image-caption dataset of small rendered scenes.

Each scene holds 1-3 coloured shapes placed in distinct cells of a coarse 3x3 grid on top of
one of several backgrounds. Images are rendered with Pillow at 4x resolution and box-filtered
down, so they are anti-aliased at any size >= 16 px. Every image comes with several
human-style captions built from varied templates and synonyms; each caption mentions a
different subset of what is in the image (an object, a background, a size, a position, a
relation between two objects...) and is always *true* of it. Because the attribute space is
combinatorial and captions are partial, many captions fit many images partially, which gives
graded (not class-like) image-caption similarity.

Only numpy's ``Generator`` (seeded from ``np.random.SeedSequence``) is used for randomness, so
:func:`generate_scenes` is byte-for-byte reproducible on any machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SYNONYMS",
    "Scene",
    "SceneObject",
    "caption_mentions",
    "describe_scene",
    "generate_scenes",
    "render_scene",
    "sample_scene",
]

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "diamond",
    "cross",
    "ring",
    "heart",
)
COLOURS: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "pink",
    "brown",
)
SIZES: tuple[str, ...] = ("small", "medium", "large")
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
BACKGROUNDS: tuple[str, ...] = (
    "grey",
    "sky blue",
    "navy",
    "sand",
    "striped",
    "checkered",
    "gradient",
    "dotted",
    "grass",
)

SYNONYMS: dict[str, tuple[str, ...]] = {
    # shapes
    "circle": ("circle", "disc", "disk", "dot", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape"),
    "star": ("star", "five pointed star"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "cross": ("cross", "plus sign", "plus"),
    "ring": ("ring", "hoop", "donut", "hollow circle"),
    "heart": ("heart", "love heart"),
    # colours
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "leaf green"),
    "blue": ("blue", "cobalt", "royal blue"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "plum"),
    "orange": ("orange", "tangerine", "amber"),
    "white": ("white", "snow white", "ivory"),
    "black": ("black", "jet black", "ebony"),
    "pink": ("pink", "rose", "hot pink"),
    "brown": ("brown", "chocolate", "chestnut"),
    # sizes
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium sized", "mid sized"),
    "large": ("large", "big", "huge"),
    # backgrounds
    "grey": ("grey", "gray", "plain grey", "plain gray"),
    "sky blue": ("sky blue", "light blue", "pale blue"),
    "navy": ("navy", "dark blue", "midnight blue", "navy blue"),
    "sand": ("sand", "sandy", "beige"),
    "striped": ("striped", "stripes", "stripy"),
    "checkered": ("checkered", "chequered", "checkerboard"),
    "gradient": ("gradient", "fading"),
    "dotted": ("dotted", "polka dot", "spotty"),
    "grass": ("grass", "grassy", "lawn", "meadow"),
}

# Noun phrases for backgrounds (every background word in them is one of its SYNONYMS).
_BG_PHRASES: dict[str, tuple[str, ...]] = {
    "grey": (
        "a grey background",
        "a plain grey background",
        "a gray backdrop",
        "a plain gray backdrop",
    ),
    "sky blue": ("a sky blue background", "a light blue backdrop", "a pale blue background"),
    "navy": (
        "a navy background",
        "a dark blue backdrop",
        "a midnight blue background",
        "a navy blue backdrop",
    ),
    "sand": ("a sandy background", "sand", "a beige backdrop"),
    "striped": ("a striped background", "stripes", "a stripy backdrop", "diagonal stripes"),
    "checkered": ("a checkered background", "a checkerboard", "a chequered backdrop"),
    "gradient": ("a gradient background", "a fading backdrop", "a colour gradient"),
    "dotted": ("a dotted background", "a polka dot backdrop", "a spotty background"),
    "grass": ("grass", "a lawn", "a grassy background", "a meadow"),
}

_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": (
        "in the top left corner",
        "in the top left",
        "in the upper left corner",
        "at the top left",
    ),
    "top": ("at the top", "near the top", "in the top middle", "at the top centre"),
    "top right": (
        "in the top right corner",
        "in the top right",
        "in the upper right corner",
        "at the top right",
    ),
    "left": ("on the left", "on the left side", "at the left edge"),
    "center": ("in the center", "in the centre", "in the middle"),
    "right": ("on the right", "on the right side", "at the right edge"),
    "bottom left": ("in the bottom left corner", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom", "in the bottom middle", "at the bottom centre"),
    "bottom right": (
        "in the bottom right corner",
        "in the lower right corner",
        "at the bottom right",
    ),
}

# Canonical relation -> phrases. "A <phrase> B" is true iff the relation holds for (A, B).
_RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "lower than"),
    "next to": ("next to", "beside", "alongside"),
}

_GENERIC_NOUNS: tuple[str, ...] = ("shape", "object", "thing", "figure")
_COUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("one", "a single"),
    2: ("two", "a pair of"),
    3: ("three",),
}

_POS_RC: dict[str, tuple[int, int]] = {p: divmod(i, 3) for i, p in enumerate(POSITIONS)}

# --------------------------------------------------------------------------------------------
# Colours and rendering parameters
# --------------------------------------------------------------------------------------------

_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "purple": (130, 50, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
}

# Colours that make up each background (the first is the dominant one).
_BG_PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "grey": ((150, 150, 150),),
    "sky blue": ((135, 200, 235),),
    "navy": ((25, 35, 85),),
    "sand": ((225, 205, 150),),
    "striped": ((205, 205, 220), (135, 135, 160)),
    "checkered": ((215, 215, 215), (135, 135, 135)),
    "gradient": ((60, 130, 150), (148, 180, 168), (235, 230, 185)),
    "dotted": ((240, 232, 212), (200, 188, 165)),
    "grass": ((75, 140, 55), (55, 115, 40), (95, 160, 70)),
}

# An object colour is allowed on a background only if it is at least this far (Euclidean RGB)
# from every colour of the background.
_MIN_COLOUR_DISTANCE = 100.0


def _allowed_colours(background: str) -> tuple[str, ...]:
    palette = np.asarray(_BG_PALETTE[background], dtype=np.float64)
    out = []
    for name in COLOURS:
        dist = np.linalg.norm(palette - np.asarray(_COLOUR_RGB[name], dtype=np.float64), axis=1)
        if float(dist.min()) >= _MIN_COLOUR_DISTANCE:
            out.append(name)
    return tuple(out)


_ALLOWED_COLOURS: dict[str, tuple[str, ...]] = {bg: _allowed_colours(bg) for bg in BACKGROUNDS}

# Half-extent of an object as a fraction of the grid cell side (objects stay inside their cell).
_SIZE_FRAC: dict[str, float] = {"small": 0.29, "medium": 0.37, "large": 0.46}
_SIZE_JITTER = 0.02
_COLOUR_JITTER = 18
_SUPERSAMPLE = 4


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    Attributes:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOURS`.
        size: one of :data:`SIZES` (``"small"``, ``"medium"``, ``"large"``).
        position: one of :data:`POSITIONS`, a cell of a coarse 3x3 grid.
    """

    shape: str
    colour: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.colour, COLOURS, "colour"),
            (self.size, SIZES, "size"),
            (self.position, POSITIONS, "position"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")


@dataclass(frozen=True)
class Scene:
    """A scene: 1-3 objects in distinct grid cells on a background.

    Attributes:
        objects: the objects, each in its own grid cell.
        background: one of :data:`BACKGROUNDS`.
    """

    objects: tuple[SceneObject, ...]
    background: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= 3:
            raise ValueError(f"a scene has 1-3 objects, got {len(self.objects)}")
        positions = [o.position for o in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"objects must be in distinct grid cells, got {positions}")
        if self.background not in BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.background!r}; expected one of {BACKGROUNDS}"
            )


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_scene(rng: np.random.Generator) -> Scene:
    """Sample a random scene.

    The number of objects is 1, 2 or 3 (probabilities 0.35, 0.40, 0.25); objects are placed in
    distinct grid cells, and their colours never clash with the background.

    Args:
        rng: source of randomness.

    Returns:
        The sampled :class:`Scene`.
    """
    background = _pick(rng, BACKGROUNDS)
    count = int(rng.choice(3, p=[0.35, 0.40, 0.25])) + 1
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    colours = _ALLOWED_COLOURS[background]
    objects = tuple(
        SceneObject(
            shape=_pick(rng, SHAPES),
            colour=_pick(rng, colours),
            size=_pick(rng, SIZES),
            position=POSITIONS[int(cell)],
        )
        for cell in cells
    )
    return Scene(objects=objects, background=background)


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


# --------------------------------------------------------------------------------------------
# Caption matching
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _build_phrase_table() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for canonical, words in SYNONYMS.items():
        for word in words:
            key = tuple(_tokens(word))
            if key in table and table[key] != canonical:
                raise ValueError(f"synonym {word!r} is ambiguous")
            table[key] = canonical
    return table


_PHRASE_TABLE = _build_phrase_table()
_MAX_PHRASE = max(len(k) for k in _PHRASE_TABLE)


def caption_mentions(caption: str) -> set[str]:
    """Canonical attribute values (shapes, colours, sizes, backgrounds) a caption mentions.

    Matching is on whole words (case-insensitive, punctuation and hyphens split words),
    longest synonym first, and matched words are consumed: ``"a hollow circle on a sky blue
    background"`` gives ``{"ring", "sky blue"}``, not ``"circle"`` or ``"blue"``.

    Args:
        caption: any text.

    Returns:
        Set of keys of :data:`SYNONYMS` mentioned by the caption.
    """
    toks = _tokens(caption)
    found: set[str] = set()
    i = 0
    while i < len(toks):
        for length in range(min(_MAX_PHRASE, len(toks) - i), 0, -1):
            canonical = _PHRASE_TABLE.get(tuple(toks[i : i + length]))
            if canonical is not None:
                found.add(canonical)
                i += length
                break
        else:
            i += 1
    return found


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _relations(a_position: str, b_position: str) -> tuple[str, ...]:
    """Canonical relations R such that "A R B" is true for objects at these grid cells.

    Horizontal relations ("left of"/"right of") need the column offset to be at least the row
    offset, vertical ones ("above"/"below") the converse (diagonals get both); "next to" means
    edge-adjacent cells.
    """
    ra, ca = _POS_RC[a_position]
    rb, cb = _POS_RC[b_position]
    dr, dc = rb - ra, cb - ca
    rels: list[str] = []
    if dc != 0 and abs(dc) >= abs(dr):
        rels.append("left of" if dc > 0 else "right of")
    if dr != 0 and abs(dr) >= abs(dc):
        rels.append("above" if dr > 0 else "below")
    if abs(dr) + abs(dc) == 1:
        rels.append("next to")
    return tuple(rels)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _np(
    obj: SceneObject,
    rng: np.random.Generator,
    *,
    size: bool,
    colour: bool,
    shape: bool,
    article: bool = True,
) -> str:
    """Noun phrase for an object mentioning only the requested attributes."""
    words = []
    if size:
        words.append(_pick(rng, SYNONYMS[obj.size]))
    if colour:
        words.append(_pick(rng, SYNONYMS[obj.colour]))
    words.append(_pick(rng, SYNONYMS[obj.shape]) if shape else _pick(rng, _GENERIC_NOUNS))
    phrase = " ".join(words)
    return _with_article(phrase) if article else phrase


def _random_np(obj: SceneObject, rng: np.random.Generator, *, article: bool = True) -> str:
    """Noun phrase with a random subset of attributes (always colour or shape)."""
    size = bool(rng.random() < 0.45)
    colour = bool(rng.random() < 0.75)
    shape = bool(rng.random() < 0.8) or not colour
    return _np(obj, rng, size=size, colour=colour, shape=shape, article=article)


def _full_np(obj: SceneObject, rng: np.random.Generator) -> str:
    return _np(obj, rng, size=True, colour=True, shape=True)


def _bg(scene: Scene, rng: np.random.Generator) -> str:
    return _pick(rng, _BG_PHRASES[scene.background])


def _pos(obj: SceneObject, rng: np.random.Generator) -> str:
    return _pick(rng, _POSITION_PHRASES[obj.position])


def _obj(scene: Scene, rng: np.random.Generator) -> SceneObject:
    return scene.objects[int(rng.integers(len(scene.objects)))]


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    noun = _pick(rng, _GENERIC_NOUNS)
    return f"{_pick(rng, _COUNT_WORDS[n])} {noun}" + ("s" if n > 1 else "")


def _t_full(scene: Scene, rng: np.random.Generator) -> str:
    prep = _pick(rng, ("on", "against", "in front of"))
    return f"{_full_np(_obj(scene, rng), rng)} {prep} {_bg(scene, rng)}"


def _t_there_is(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    a = _random_np(obj, rng)
    form = int(rng.integers(3))
    if form == 0:
        return f"there is {a} {_pos(obj, rng)}"
    if form == 1:
        return f"{a} can be seen {_pos(obj, rng)}"
    return f"{a} is {_pos(obj, rng)}"


def _t_minimal(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    with_colour = bool(rng.random() < 0.5)
    a = _np(obj, rng, size=False, colour=with_colour, shape=True)
    lead = _pick(rng, ("an image with", "a picture of", "a photo showing", "a drawing of"))
    return f"{lead} {a}"


def _t_backdrop(scene: Scene, rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return f"{_bg(scene, rng)} with {_random_np(_obj(scene, rng), rng)}"
    n = len(scene.objects)
    return f"{_count_phrase(n, rng)} on {_bg(scene, rng)}"


def _t_count_list(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    nps = [_random_np(o, rng) for o in scene.objects]
    order = rng.permutation(n)
    listed = _join([nps[int(i)] for i in order])
    if n == 1:
        return _pick(rng, (f"just one {_pick(rng, _GENERIC_NOUNS)}, {listed}", f"only {listed}"))
    return f"{_count_phrase(n, rng)}: {listed}"


def _t_relation(scene: Scene, rng: np.random.Generator) -> str | None:
    n = len(scene.objects)
    if n < 2:
        return None
    i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    rel = _pick(rng, _relations(a.position, b.position))
    form = int(rng.integers(4))
    phrases = _RELATION_PHRASES[rel]
    if form != 1:  # "A higher than B" reads badly without a verb
        phrases = tuple(p for p in phrases if not p.endswith(" than"))
    phrase = _pick(rng, phrases)
    if form == 0:
        return f"{_random_np(a, rng)} {phrase} {_random_np(b, rng)}"
    if form == 1:
        na, nb = _random_np(a, rng, article=False), _random_np(b, rng, article=False)
        return f"the {na} is {phrase} the {nb}"
    if form == 2 and n == 2:
        return f"{_count_phrase(2, rng)}: {_random_np(a, rng)} {phrase} {_random_np(b, rng)}"
    return f"{_random_np(a, rng)} {phrase} {_random_np(b, rng)} on {_bg(scene, rng)}"


def _t_position(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    a = _np(obj, rng, size=False, colour=bool(rng.random() < 0.5), shape=True)
    return f"{a} {_pos(obj, rng)}"


def _t_sizes(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    if n == 1:
        a = _np(scene.objects[0], rng, size=True, colour=False, shape=True, article=False)
        return _pick(rng, (f"a lone {a}", f"just a {a} on its own", f"nothing but a {a}"))
    k = 2 if n == 2 or rng.random() < 0.5 else 3
    idx = sorted(int(v) for v in rng.choice(n, size=k, replace=False))
    return _join([_np(scene.objects[i], rng, size=True, colour=False, shape=True) for i in idx])


def _t_colours(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    names: list[str] = []
    for o in scene.objects:
        if o.colour not in names:
            names.append(o.colour)
    words = [_pick(rng, SYNONYMS[c]) for c in names]
    suffix = f" on {_bg(scene, rng)}" if rng.random() < 0.5 else ""
    noun = _pick(rng, _GENERIC_NOUNS)
    if n == 1:
        return _pick(rng, (f"something {words[0]}", f"a lone {words[0]} {noun}")) + suffix
    if len(names) == 1:
        return f"{_pick(rng, _COUNT_WORDS[n])} {words[0]} {noun}s{suffix}"
    if rng.random() < 0.5:
        return f"{_join(words)} {noun}s{suffix}"
    return f"{noun}s in {_join(words)}{suffix}"


def _t_long(scene: Scene, rng: np.random.Generator) -> str:
    objs = list(scene.objects)
    if len(objs) == 3:
        objs = [objs[int(i)] for i in sorted(rng.choice(3, size=2, replace=False))]
    parts = [
        f"{_np(o, rng, size=bool(rng.random() < 0.5), colour=True, shape=True)} {_pos(o, rng)}"
        for o in objs
    ]
    text = " and ".join(parts)
    if rng.random() < 0.5:
        text += f", on {_bg(scene, rng)}"
    return text


_Template = Callable[[Scene, np.random.Generator], "str | None"]
_TEMPLATES: tuple[_Template, ...] = (
    _t_full,
    _t_there_is,
    _t_minimal,
    _t_backdrop,
    _t_count_list,
    _t_relation,
    _t_position,
    _t_sizes,
    _t_colours,
    _t_long,
)

_MIN_WORDS, _MAX_WORDS = 3, 20


def _finish(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.25:
        text += "."
    return text


def describe_scene(scene: Scene, rng: np.random.Generator, num_captions: int = 5) -> list[str]:
    """Write distinct, true, human-style captions for a scene.

    Captions come from varied templates (templates are used without repetition as long as
    possible) and synonyms; each mentions a subset of the scene (one or more objects, sizes,
    colours, positions, a relation between two objects, the object count, the background).
    Every caption has 3-20 words and at least one attribute value (see :func:`caption_mentions`);
    the captions of one scene are pairwise distinct and do not all mention the same values.

    Args:
        scene: the scene to describe.
        rng: source of randomness.
        num_captions: number of captions, >= 1.

    Returns:
        List of ``num_captions`` strings.
    """
    if num_captions < 1:
        raise ValueError(f"num_captions must be >= 1, got {num_captions}")
    captions: list[str] = []
    seen: set[str] = set()
    mention_sets: list[frozenset[str]] = []
    queue: list[int] = []
    for _ in range(200 * num_captions):
        if len(captions) == num_captions:
            break
        if not queue:
            queue = [int(i) for i in rng.permutation(len(_TEMPLATES))]
        text = _TEMPLATES[queue.pop()](scene, rng)
        if text is None:
            continue
        n_words = len(text.split())
        if not _MIN_WORDS <= n_words <= _MAX_WORDS:
            continue
        key = text.lower()
        mentions = frozenset(caption_mentions(text))
        if key in seen or not mentions:
            continue
        last = len(captions) == num_captions - 1
        if last and num_captions > 1 and all(m == mentions for m in mention_sets):
            continue
        seen.add(key)
        mention_sets.append(mentions)
        captions.append(_finish(text, rng))
    if len(captions) != num_captions:  # pragma: no cover - vocabulary is far larger than needed
        raise RuntimeError(f"could not write {num_captions} distinct captions for {scene}")
    return captions


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def generate_scenes(
    count: int, image_size: int, seed: int, num_captions: int = 5
) -> tuple[np.ndarray, list[list[str]], list[Scene]]:
    """Generate a deterministic image-caption dataset.

    Item ``i`` uses its own child of ``np.random.SeedSequence(seed)`` (split further into
    independent streams for the scene, its rendering and its captions), so it does not depend
    on ``count``: a shorter dataset is a prefix of a longer one with the same seed, and images
    do not depend on ``num_captions``.

    Args:
        count: number of items, >= 0.
        image_size: image side length in pixels, >= 16.
        seed: dataset seed.
        num_captions: captions per image, >= 1.

    Returns:
        ``(images, captions, scenes)``: images of shape (count, image_size, image_size, 3),
        dtype uint8; ``captions[i]`` a list of ``num_captions`` strings for image ``i``;
        ``scenes[i]`` the ground-truth :class:`Scene` of image ``i``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    captions: list[list[str]] = []
    scenes: list[Scene] = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(count)):
        scene_ss, render_ss, caption_ss = child.spawn(3)
        scene = sample_scene(np.random.default_rng(scene_ss))
        images[i] = render_scene(scene, image_size, np.random.default_rng(render_ss))
        captions.append(describe_scene(scene, np.random.default_rng(caption_ss), num_captions))
        scenes.append(scene)
    return images, captions, scenes

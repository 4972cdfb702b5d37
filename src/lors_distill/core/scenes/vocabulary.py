"""The scenes' vocabulary: shapes, colours, sizes, positions, backgrounds, their synonyms and
the colours each background allows."""

from __future__ import annotations

import numpy as np

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

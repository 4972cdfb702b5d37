"""What a scene is (objects on a 3x3 grid over a background) and how one is sampled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lors_distill.core.scenes.vocabulary import (
    _ALLOWED_COLOURS,
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
)

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

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

from lors_distill.core.scenes.captions import caption_mentions, describe_scene
from lors_distill.core.scenes.dataset import generate_scenes
from lors_distill.core.scenes.layout import Scene, SceneObject, sample_scene
from lors_distill.core.scenes.render import render_scene
from lors_distill.core.scenes.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNONYMS,
)

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

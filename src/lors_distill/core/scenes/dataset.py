"""The deterministic image-caption dataset: one seed stream per item."""

from __future__ import annotations

import numpy as np

from lors_distill.core.scenes.captions import describe_scene
from lors_distill.core.scenes.layout import Scene, sample_scene
from lors_distill.core.scenes.render import render_scene

# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def generate_scenes(
    count: int, image_size: int, seed: int, num_captions: int
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
        num_captions: captions per image, >= 1 (``ingestion.scenes.captions_per_image``).

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

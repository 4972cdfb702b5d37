"""Seeded, batched image augmentation for expert training (resized crop, flip, RandAugment)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lors_distill.core.device import seeded_rng, to_device


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation switches (the paper: crop scale 0.5-1, flip, RandAugment(2, 5))."""

    random_resized_crop: bool
    crop_scale: tuple[float, float]
    flip: bool
    rand_augment: bool
    rand_augment_ops: int
    rand_augment_magnitude: int


def rand_augment_uint8(
    images: torch.Tensor, ops: int, magnitude: int, generator: torch.Generator
) -> torch.Tensor:
    """torchvision RandAugment applied per image of a ``(B, 3, S, S)`` uint8 batch, seeded."""
    from torchvision.transforms import v2

    transform = v2.RandAugment(num_ops=ops, magnitude=magnitude)
    seeds = torch.randint(0, 2**62, (images.shape[0],), generator=generator)
    out = torch.empty_like(images)
    for index, seed in enumerate(seeds.tolist()):
        with seeded_rng(seed):
            out[index] = transform(images[index])
    return out


def crop_and_flip(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random resized crop (area fraction in ``crop_scale``, aspect 3/4-4/3) and horizontal flip.

    One affine resampling for the whole ``(B, C, S, S)`` float batch; output has the input size.
    """
    batch = images.shape[0]
    device = images.device
    scale_x = torch.ones(batch)
    scale_y = torch.ones(batch)
    shift_x = torch.zeros(batch)
    shift_y = torch.zeros(batch)
    if config.random_resized_crop:
        low, high = config.crop_scale
        area = low + (high - low) * torch.rand(batch, generator=generator)
        log_ratio = (torch.rand(batch, generator=generator) * 2 - 1) * math.log(4 / 3)
        ratio = torch.exp(log_ratio)
        scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
        scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
        shift_x = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - scale_x)
        shift_y = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - scale_y)
    if config.flip:
        flips = torch.rand(batch, generator=generator) < 0.5
        scale_x = torch.where(flips, -scale_x, scale_x)
    if not (config.random_resized_crop or config.flip):
        return images
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(
        to_device(theta, device).to(images.dtype), list(images.shape), align_corners=False
    )
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )

"""Seeded, batched image augmentation for expert training (resized crop, flip, RandAugment)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from lors_distill.core.device import seeded_rng, to_device
from lors_distill.core.schema import Strict, one_of


class AugmentConfig(Strict):
    """Augmentation switches, the ``experts.augment`` parameters (the paper: crop scale 0.5-1,
    flip, RandAugment(2, 5))."""

    random_resized_crop: bool
    crop_scale: tuple[float, float]
    flip: bool
    rand_augment: bool
    rand_augment_ops: int = Field(ge=0)
    rand_augment_magnitude: int = Field(ge=0, le=30)
    rand_augment_style: str

    @field_validator("rand_augment_style")
    @classmethod
    def _known_style(cls, value: str) -> str:
        return one_of(value, RAND_AUGMENT_STYLES)

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1] <= 1.0:
            raise ValueError("need 0 < low <= high <= 1")
        return value


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


# BLIP's RandomAugment (the LoRS reference's experts): 10 operations, magnitudes on a 0..10 scale
_BLIP_OPS = (
    "identity",
    "autocontrast",
    "brightness",
    "sharpness",
    "equalize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
)
_BLIP_FILL = [128.0, 128.0, 128.0]  # grey where a geometric op uncovers the border
_BLIP_MAX_LEVEL = 10


def _blip_op(image: torch.Tensor, name: str, level: float, sign: float) -> torch.Tensor:
    """One BLIP RandomAugment operation on a ``(3, S, S)`` uint8 image at ``level``."""
    from torchvision.transforms.v2 import functional as TF

    fraction = level / _BLIP_MAX_LEVEL
    if name == "identity":
        return image
    if name == "autocontrast":
        return TF.autocontrast(image)
    if name == "equalize":
        return TF.equalize(image)
    if name in ("brightness", "sharpness"):  # factor 0.1..1.9 (1.0, a no-op, at level 5)
        factor = fraction * 1.8 + 0.1
        adjust = TF.adjust_brightness if name == "brightness" else TF.adjust_sharpness
        return adjust(image, factor)
    if name in ("shear_x", "shear_y"):  # shear factor up to 0.3, as an angle for torchvision
        degrees = sign * math.degrees(math.atan(fraction * 0.3))
        shear = [degrees, 0.0] if name == "shear_x" else [0.0, degrees]
        return TF.affine(
            image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, fill=_BLIP_FILL
        )
    if name in ("translate_x", "translate_y"):  # up to 10 pixels
        offset = sign * fraction * 10.0
        shift = [offset, 0.0] if name == "translate_x" else [0.0, offset]
        return TF.affine(
            image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], fill=_BLIP_FILL
        )
    if name == "rotate":  # up to 30 degrees
        return TF.rotate(image, sign * fraction * 30.0, fill=_BLIP_FILL)
    raise ValueError(f"unknown BLIP RandomAugment operation {name!r}")


def blip_rand_augment_uint8(
    images: torch.Tensor, ops: int, magnitude: int, generator: torch.Generator
) -> torch.Tensor:
    """BLIP's ``RandomAugment(ops, magnitude)`` on a ``(B, 3, S, S)`` uint8 batch, seeded.

    Per image: ``ops`` operations drawn with replacement from BLIP's 10, each applied with
    probability 0.5, every geometric one with a random sign. Written from BLIP's definition on
    torchvision's tensor functions: shears and rotations turn about the image centre (BLIP's
    cv2 shear turns about the corner), so pixels differ slightly from BLIP's.
    """
    batch = images.shape[0]
    choice = torch.randint(len(_BLIP_OPS), (batch, ops), generator=generator)
    applied = torch.rand(batch, ops, generator=generator) < 0.5
    signs = torch.where(torch.rand(batch, ops, generator=generator) < 0.5, -1.0, 1.0)
    out = images.clone()
    for index in range(batch):
        image = out[index]
        for k in range(ops):
            if applied[index, k]:
                name = _BLIP_OPS[int(choice[index, k])]
                image = _blip_op(image, name, float(magnitude), float(signs[index, k]))
        out[index] = image
    return out


RAND_AUGMENT_STYLES = {
    "torchvision": rand_augment_uint8,  # 14 operations, always applied
    "blip": blip_rand_augment_uint8,  # the LoRS reference's
}


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

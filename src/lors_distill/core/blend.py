"""Representation blending (RepBlend, PAPER.md section 7).

In each inner step of distillation the mini-batch's image embeddings (the image encoder's
output, before any image projection head) and its text vectors (before the text head) are
mixed with one ``lam ~ Beta(alpha, alpha)`` and one permutation of the batch:
``x' = lam x + (1 - lam) x[perm]``, the same ``lam`` and ``perm`` for both modalities. The
soft targets ``S[B, B]`` stay as they are.

Each step's mix is drawn from that step's own seed (the seed that also fixes its dropout
masks), never from the run's generator: every pass over a step (TESLA's recomputation
included) sees the same mix, and a run without blending draws exactly what it drew before
blending existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from lors_distill.core.schema import Strict

_STREAM = 0x5EB1E9D  # keeps the mixes' random stream apart from anything else seeded per step


class BlendConfig(Strict):
    """``distillation.blend``: whether inner steps blend representations, and the Beta
    distribution's ``alpha`` (the reference's 1.0: ``lam`` uniform on [0, 1]). ``alpha: 0``
    blends nothing, like ``enabled: false``."""

    enabled: bool
    alpha: float = Field(ge=0.0)

    @property
    def active(self) -> bool:
        return self.enabled and self.alpha > 0.0


@dataclass(frozen=True)
class Mix:
    """One inner step's blend: ``x -> lam x + (1 - lam) x[perm]`` along the batch."""

    lam: float
    perm: torch.Tensor  # (B,) int64, on the batch's device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lam + x[self.perm] * (1.0 - self.lam)

    def to(self, device: torch.device) -> Mix:
        return Mix(self.lam, self.perm.to(device, non_blocking=True))


def draw_mix(config: BlendConfig, size: int, seed: int) -> Mix | None:
    """The mix of a step of ``size`` pairs with seed ``seed``; None when blending is off."""
    if not config.active:
        return None
    rng = np.random.default_rng([int(seed), _STREAM])
    lam = float(rng.beta(config.alpha, config.alpha))
    return Mix(lam, torch.from_numpy(rng.permutation(size)).long())

"""The learned distilled set (images, texts, similarity, inner learning rates) and its
initialisation from real pairs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from lors_distill.core.similarity import Similarity

logger = logging.getLogger(__name__)


class SyntheticSet(nn.Module):
    """The learned distilled set.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in the models' normalised pixel space.
        texts: ``(N, d)`` float32 in the frozen text encoder's space.
        lrs: ``(2,)`` inner learning rates (image encoder, text head).
        similarity: the learned targets ``S`` (``N x N``, possibly low-rank).
    """

    def __init__(
        self, images: torch.Tensor, texts: torch.Tensor, lr_init: float, similarity: Similarity
    ) -> None:
        super().__init__()
        if images.shape[0] != texts.shape[0] or images.shape[0] != similarity.size:
            raise ValueError("images, texts and similarity must have the same N")
        self.images = nn.Parameter(images.float().clone())
        self.texts = nn.Parameter(texts.float().clone())
        self.lrs = nn.Parameter(torch.full((2,), float(lr_init)))
        self.similarity = similarity

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def init_synthetic_pairs(
    images: torch.Tensor,
    text: torch.Tensor,
    caption_image: torch.Tensor,
    count: int,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    init: Literal["real", "noise"] = "real",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random real pairs (one random caption per chosen image), or Gaussian noise.

    Args:
        images: ``(N_real, 3, S, S)`` uint8; text: ``(M, d)``; caption_image: ``(M,)``.

    Returns:
        ``(images (count, 3, S, S) float32 normalised, texts (count, d), chosen image indices)``.
    """
    if count > images.shape[0]:
        raise ValueError(f"cannot draw {count} pairs from {images.shape[0]} train images")
    chosen = torch.randperm(images.shape[0], generator=generator)[:count]
    order = torch.argsort(caption_image, stable=True)
    counts = torch.bincount(caption_image, minlength=images.shape[0])
    offsets = torch.cumsum(counts, 0) - counts
    if (counts[chosen] == 0).any():
        raise ValueError("a chosen train image has no caption")
    pick = (torch.rand(count, generator=generator) * counts[chosen]).long()
    captions = order[offsets[chosen] + pick]
    if init == "noise":
        pixels = torch.randn((count, *images.shape[1:]), generator=generator)
        texts = torch.randn((count, text.shape[1]), generator=generator) * text.std()
        return pixels, texts, chosen
    return normalize(images[chosen]).float(), text[captions].float().clone(), chosen

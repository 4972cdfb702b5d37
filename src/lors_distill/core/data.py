"""In-memory image-text splits and pixel normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageTextSplit:
    """One split: images, caption vectors and which image each caption describes.

    Attributes:
        images: ``(N, 3, S, S)`` uint8.
        text: ``(M, d)`` float32 frozen caption embeddings.
        caption_image: ``(M,)`` int64 index into ``images``.
    """

    images: torch.Tensor
    text: torch.Tensor
    caption_image: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be (N, 3, S, S) uint8, "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.text.shape[0] != self.caption_image.shape[0]:
            raise ValueError("text and caption_image must have one row per caption")
        if self.caption_image.numel() and int(self.caption_image.max()) >= self.images.shape[0]:
            raise ValueError("caption_image points past the last image")

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def captions_by_image(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CSR view: ``(order, offsets, counts)`` so image ``i``'s captions are
        ``order[offsets[i] : offsets[i] + counts[i]]``."""
        order = torch.argsort(self.caption_image, stable=True)
        counts = torch.bincount(self.caption_image, minlength=self.num_images)
        offsets = torch.cumsum(counts, 0) - counts
        return order, offsets, counts


@dataclass(frozen=True)
class Normalizer:
    """uint8 pixels -> ``(x / 255 - mean) / std`` per channel (the models' input space)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` uint8 (any device) -> float32 normalised."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Inverse, for viewing: normalised float -> clamped uint8."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return ((images * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)

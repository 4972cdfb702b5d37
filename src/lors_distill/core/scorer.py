"""A trained dual encoder as a self-contained retrieval scorer (what is exported and served).

The scorer takes raw ``uint8`` images and frozen text vectors and returns their cosine
similarities, so whoever loads it needs neither our normaliser nor our model classes. It is
stored as a safetensors bundle (state dict + recipe + pixel statistics; loading never unpickles)
and, through :mod:`lors_distill.datasets`, also logged as an MLflow ``pytorch`` model in the
``pt2`` (``torch.export``) format, which loads back without pickle as well.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.data import Normalizer
from lors_distill.core.models import DualEncoder, ModelRecipe

_PREFIX = "model."


class RetrievalScorer(nn.Module):
    """``(images uint8 (B, 3, S, S), text (M, d)) -> (B, M)`` cosine similarities."""

    def __init__(self, model: DualEncoder, normalizer: Normalizer) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(normalizer.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(normalizer.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pixels = (images.float() / 255.0 - self.mean) / self.std
        return self.model.encode_image(pixels) @ self.model.encode_text(text).T


def scorer_bundle(
    model: DualEncoder,
    recipe: ModelRecipe,
    normalizer: Normalizer,
    **metadata: object,
) -> TensorBundle:
    """The trained model's state dict, with what is needed to rebuild it, as one bundle."""
    tensors = {
        f"{_PREFIX}{name}": value.detach().cpu().contiguous()
        for name, value in model.state_dict().items()
    }
    return TensorBundle(
        tensors,
        {
            **metadata,
            "model": recipe.to_json(),
            "image_mean": list(normalizer.mean),
            "image_std": list(normalizer.std),
        },
    )


def scorer_from_bundle(bundle: TensorBundle) -> RetrievalScorer:
    """Rebuild the scorer of :func:`scorer_bundle` (eval mode, CPU)."""
    meta = bundle.metadata
    recipe = ModelRecipe.from_json(meta["model"])
    # the weights come from the bundle: never from the hub or a checkpoint file
    name = recipe.encoder.name
    if name.startswith("open_clip:"):
        name = ":".join(name.split(":")[:2])
    encoder = replace(recipe.encoder, name=name, pretrained=False)
    model = replace(recipe, encoder=encoder).build(seed=0)
    state = {
        name[len(_PREFIX) :]: value
        for name, value in bundle.tensors.items()
        if name.startswith(_PREFIX)
    }
    model.load_state_dict(state, strict=True)
    normalizer = Normalizer(tuple(meta["image_mean"]), tuple(meta["image_std"]))
    return RetrievalScorer(model, normalizer).eval()


def example_inputs(recipe: ModelRecipe, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the right shapes and types (for ``torch.export`` and signatures)."""
    size = recipe.encoder.image_size
    return (
        torch.zeros(batch, 3, size, size, dtype=torch.uint8),
        torch.zeros(batch + 1, recipe.text_dim, dtype=torch.float32),
    )

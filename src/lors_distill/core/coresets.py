"""Coreset selection baselines: N real train images, one caption each.

``herding`` and ``k-center`` work on an expert's features: the concatenation of the trained
expert's L2-normalised image embedding and the embedding of the image's first caption through
its text head (both in the shared retrieval space). ``forgetting`` counts forgetting events of
in-batch image->text retrieval while training an expert-like model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lors_distill.core.data import ImageTextSplit, Normalizer
from lors_distill.core.device import seeded_rng
from lors_distill.core.losses import symmetric_infonce
from lors_distill.core.models import DualEncoder

logger = logging.getLogger(__name__)


def first_captions(split: ImageTextSplit) -> torch.Tensor:
    """Index of each image's first caption, ``(N,)``."""
    order, offsets, counts = split.captions_by_image()
    if (counts == 0).any():
        raise ValueError("every train image needs at least one caption")
    return order[offsets]


def random_captions(split: ImageTextSplit, generator: torch.Generator) -> torch.Tensor:
    """One random caption index per image, ``(N,)``."""
    order, offsets, counts = split.captions_by_image()
    pick = (torch.rand(split.num_images, generator=generator) * counts).long()
    return order[offsets + pick]


def select_random(count: int, total: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(total, generator=generator)[:count]


def select_herding(features: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy herding: each pick keeps the running mean of the selection closest to the mean.

    Args:
        features: ``(N, D)``.
    """
    target = features.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(features.shape[0], dtype=torch.bool)
    for step in range(1, count + 1):
        # the mean after adding x is (running + x) / step; pick x minimising its distance to target
        candidate_means = (running[None, :] + features) / step
        distance = (candidate_means - target[None, :]).norm(dim=1)
        distance[~available] = float("inf")
        index = int(distance.argmin())
        chosen.append(index)
        available[index] = False
        running += features[index]
    return torch.tensor(chosen)


def select_k_center(features: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-center (farthest point): start at a random point, then repeatedly add the point
    farthest from everything chosen so far."""
    first = int(torch.randint(features.shape[0], (1,), generator=generator))
    chosen = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(count - 1):
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, (features - features[index]).norm(dim=1))
    return torch.tensor(chosen)


@torch.no_grad()
def expert_features(
    model: DualEncoder,
    split: ImageTextSplit,
    captions: torch.Tensor,
    normalize,
    device: torch.device,
    batch_size: int = 512,
) -> torch.Tensor:
    """``(N, 2D)``: [image embedding, embedding of ``captions[i]``] per image (eval mode)."""
    model.eval().to(device)
    parts = []
    for start in range(0, split.num_images, batch_size):
        images = normalize(split.images[start : start + batch_size].to(device))
        text = split.text[captions[start : start + batch_size]].to(device)
        parts.append(torch.cat([model.encode_image(images), model.encode_text(text)], dim=1).cpu())
    return torch.cat(parts)


def forgetting_counts(
    model: DualEncoder,
    split: ImageTextSplit,
    normalize,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Forgetting events per image while training ``model`` with InfoNCE (Toneva et al.).

    An event is an image whose own caption was the in-batch top-1 match at its previous visit
    and is not any more. Images never learned count as forgotten ``epochs`` times (hardest).
    Every random draw, the text head's dropout included, comes from ``generator``, so the counts
    do not depend on what ran before in the process.
    """
    captions = random_captions(split, generator)
    dropout_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with seeded_rng(dropout_seed, device):
        return _count_forgetting(
            model, split, normalize, captions, epochs, batch_size, lr, generator, device
        )


def _count_forgetting(
    model, split, normalize, captions, epochs, batch_size, lr, generator, device
) -> torch.Tensor:
    """The training loop of :func:`forgetting_counts`, run inside its forked RNG."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.to(device).train()
    previous = torch.zeros(split.num_images, dtype=torch.bool)
    ever = torch.zeros(split.num_images, dtype=torch.bool)
    events = torch.zeros(split.num_images, dtype=torch.long)
    for _ in range(epochs):
        for batch in torch.randperm(split.num_images, generator=generator).split(batch_size):
            if batch.numel() < 2:
                continue
            images = normalize(split.images[batch].to(device))
            logits = model(images, split.text[captions[batch]].to(device))
            correct = (logits.argmax(dim=1) == torch.arange(batch.numel(), device=device)).cpu()
            events[batch] += (previous[batch] & ~correct).long()
            previous[batch] = correct
            ever[batch] |= correct
            loss = symmetric_infonce(logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    events[~ever] = epochs
    return events


def select_forgetting(events: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """The ``count`` most-forgotten images (random order among equal counts)."""
    tie_break = torch.rand(events.shape[0], generator=generator)
    order = sorted(range(events.shape[0]), key=lambda i: (-int(events[i]), float(tie_break[i])))
    return torch.tensor(order[:count])


def teacher_similarity(
    model: DualEncoder, images: torch.Tensor, texts: torch.Tensor
) -> torch.Tensor:
    """Soft targets from a trained model (the ``random_teacher`` control): its cosine similarity
    between every image and text of a set (images already normalised), min-max scaled over the
    whole matrix to ``[0, 1]``, with the diagonal set to 1 (each image's own caption stays a full
    positive)."""
    model.eval()
    with torch.no_grad():
        cosine = model.encode_image(images) @ model.encode_text(texts).T
    scaled = (cosine - cosine.min()) / (cosine.max() - cosine.min()).clamp(min=1e-8)
    return scaled.fill_diagonal_(1.0)


# ------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CoresetInputs:
    """What a selection method may read: the train split, the budget, the expert (as a model
    at a snapshot: ``expert(0)`` its initialisation, ``expert(-1)`` its end), the expert's image
    learning rate, the forgetting run's shape and the device."""

    split: ImageTextSplit
    budget: int
    expert: Callable[[int], tuple[DualEncoder, Normalizer]]
    expert_lr_image: float
    forgetting_epochs: int
    forgetting_batch_size: int
    device: torch.device


# (inputs, generator) -> (chosen image indices, the caption index of each train image)
CoresetSelector = Callable[[CoresetInputs, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
# the coreset methods in the order they are selected, reported and seeded (``derive_seed`` of
# their position): the only list of their names
CORESET_METHODS: dict[str, CoresetSelector] = {}


def register_coreset(name: str) -> Callable[[CoresetSelector], CoresetSelector]:
    """Add a selection method; the baselines pipeline writes ``<name>_set`` for it."""

    def decorate(selector: CoresetSelector) -> CoresetSelector:
        CORESET_METHODS[name] = selector
        return selector

    return decorate


@register_coreset("random")
def _random(inputs: CoresetInputs, generator: torch.Generator):
    chosen = select_random(inputs.budget, inputs.split.num_images, generator)
    return chosen, random_captions(inputs.split, generator)


def _expert_space(inputs: CoresetInputs) -> tuple[torch.Tensor, torch.Tensor]:
    model, normalizer = inputs.expert(-1)
    captions = first_captions(inputs.split)
    return expert_features(model, inputs.split, captions, normalizer, inputs.device), captions


@register_coreset("herding")
def _herding(inputs: CoresetInputs, generator: torch.Generator):
    features, captions = _expert_space(inputs)
    return select_herding(features, inputs.budget), captions


@register_coreset("k_center")
def _k_center(inputs: CoresetInputs, generator: torch.Generator):
    features, captions = _expert_space(inputs)
    return select_k_center(features, inputs.budget, generator), captions


@register_coreset("forgetting")
def _forgetting(inputs: CoresetInputs, generator: torch.Generator):
    model, normalizer = inputs.expert(0)  # trained from the expert's initialisation
    events = forgetting_counts(
        model,
        inputs.split,
        normalizer,
        inputs.forgetting_epochs,
        inputs.forgetting_batch_size,
        inputs.expert_lr_image,
        generator,
        inputs.device,
    )
    logger.info("forgetting events: mean %.2f, max %d", events.float().mean(), events.max())
    return select_forgetting(events, inputs.budget, generator), random_captions(
        inputs.split, generator
    )

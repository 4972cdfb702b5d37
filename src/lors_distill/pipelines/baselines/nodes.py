"""Nodes of the ``baselines`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import torch

from lors_distill.core.artifacts import expert_model, image_text_split
from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import parse_section
from lors_distill.core.coresets import (
    expert_features,
    first_captions,
    forgetting_counts,
    random_captions,
    select_forgetting,
    select_herding,
    select_k_center,
    select_random,
)
from lors_distill.core.device import resolve_device
from lors_distill.core.seeding import derive_seed

logger = logging.getLogger(__name__)


def coreset_bundle(
    method: str,
    chosen: torch.Tensor,
    captions: torch.Tensor,
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    trajectory: TensorBundle,
) -> TensorBundle:
    """A coreset in the distilled-set format: real images/texts, ``S = I``, the experts' lr."""
    _, normalizer = expert_model(trajectory)
    experts = trajectory.metadata["experts"]
    return TensorBundle(
        {
            "images": normalizer(train_images["images"][chosen]).float(),
            "texts": train_text_features["embeddings"][captions[chosen]].float().clone(),
            "lrs": torch.tensor([experts["lr_image"], experts["lr_text"]], dtype=torch.float32),
        },
        {
            "method": method,
            "sim_type": "identity",
            "rank": None,
            "alpha": None,
            "num_pairs": int(chosen.numel()),
            "image_mean": list(normalizer.mean),
            "image_std": list(normalizer.std),
            "model": trajectory.metadata["model"],
            "train_image_indices": chosen.tolist(),
        },
    )


def select_coresets(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    distillation_params: dict[str, Any],
    baselines_params: dict[str, Any],
    *trajectories: TensorBundle,
) -> tuple[TensorBundle, ...]:
    """Select every coreset of ``distillation.num_pairs`` real pairs.

    Returns:
        The random, herding, k_center and forgetting coresets, each with ``S = I`` and the
        experts' learning rates.
    """
    budget = parse_section("distillation", distillation_params).num_pairs
    config = parse_section("baselines", baselines_params)
    if config.expert_index >= len(trajectories):
        raise ValueError(
            f"baselines.expert_index is {config.expert_index} but only {len(trajectories)} "
            "experts exist"
        )
    trajectory = trajectories[config.expert_index]
    split = image_text_split(train_images, train_text_features)
    device = resolve_device(config.device)
    results = []
    for method in ("random", "herding", "k_center", "forgetting"):
        generator = torch.Generator().manual_seed(derive_seed(config.seed, len(results)))
        if method == "random":
            chosen = select_random(budget, split.num_images, generator)
            captions = random_captions(split, generator)
        elif method in ("herding", "k_center"):
            model, normalizer = expert_model(trajectory)
            captions = first_captions(split)
            features = expert_features(model, split, captions, normalizer, device)
            chosen = (
                select_herding(features, budget)
                if method == "herding"
                else select_k_center(features, budget, generator)
            )
        else:
            model, normalizer = expert_model(trajectory, snapshot=0)  # from its initialisation
            experts = trajectory.metadata["experts"]
            events = forgetting_counts(
                model,
                split,
                normalizer,
                config.forgetting_epochs,
                config.forgetting_batch_size,
                experts["lr_image"],
                generator,
                device,
            )
            logger.info("forgetting events: mean %.2f, max %d", events.float().mean(), events.max())
            chosen = select_forgetting(events, budget, generator)
            captions = random_captions(split, generator)
        logger.info("coreset %s: %d pairs", method, budget)
        results.append(
            coreset_bundle(method, chosen, captions, train_images, train_text_features, trajectory)
        )
    return tuple(results)

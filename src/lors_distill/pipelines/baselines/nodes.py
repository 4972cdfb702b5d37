"""Nodes of the ``baselines`` pipeline."""

from __future__ import annotations

import logging

import torch

from lors_distill.core.artifacts import expert_model, expert_normalizer, image_text_split
from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import BaselinesParams, DistillationParams, check_train_size
from lors_distill.core.coresets import CORESET_METHODS, CoresetInputs
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
    """A coreset in the distilled-set format: real images/texts, ``S = I``, the experts' lr
    (evaluated with the experts' recipe: on their frozen backbone if they have one)."""
    normalizer = expert_normalizer(trajectory)
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


def select_coreset(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    distillation: DistillationParams,
    config: BaselinesParams,
    *trajectories: TensorBundle,
    method: str,
    backbone: TensorBundle | None = None,
    label: str | None = None,
) -> TensorBundle:
    """Select the ``method`` coreset (a :data:`~lors_distill.core.coresets.CORESET_METHODS`
    entry) of ``distillation.num_pairs`` real pairs.

    Its seed is derived from ``baselines.seed`` and the method's place in the registry, so each
    coreset is the same whichever node or process selects it.

    ``backbone``: the frozen backbone of frozen-backbone experts (the set's row is then
    ``label``, e.g. ``random_frozen``).

    Returns:
        The coreset in the distilled-set format, with ``S = I`` and the experts' learning rates.
    """
    budget = distillation.num_pairs
    check_train_size(budget, train_images["images"].shape[0])  # also when no hook saw ingestion
    if config.expert_index >= len(trajectories):
        raise ValueError(
            f"baselines.expert_index is {config.expert_index} but only {len(trajectories)} "
            "experts exist"
        )
    trajectory = trajectories[config.expert_index]
    inputs = CoresetInputs(
        split=image_text_split(train_images, train_text_features),
        budget=budget,
        expert=lambda snapshot: expert_model(trajectory, snapshot, backbone),
        expert_lr_image=trajectory.metadata["experts"]["lr_image"],
        forgetting_epochs=config.forgetting_epochs,
        forgetting_batch_size=config.forgetting_batch_size,
        device=resolve_device(config.device),
    )
    index = list(CORESET_METHODS).index(method)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, index))
    chosen, captions = CORESET_METHODS[method](inputs, generator)
    label = label or method
    logger.info("coreset %s: %d pairs", label, budget)
    return coreset_bundle(label, chosen, captions, train_images, train_text_features, trajectory)


def select_coreset_on_backbone(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    distillation: DistillationParams,
    config: BaselinesParams,
    backbone: TensorBundle,
    *trajectories: TensorBundle,
    method: str,
    label: str,
) -> TensorBundle:
    """:func:`select_coreset` in the frozen-backbone protocol: the same selection rule (and
    seed) in the space of the frozen-backbone experts."""
    return select_coreset(
        train_images,
        train_text_features,
        distillation,
        config,
        *trajectories,
        method=method,
        backbone=backbone,
        label=label,
    )

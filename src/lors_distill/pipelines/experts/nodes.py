"""Nodes of the ``experts`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from lors_distill.core.artifacts import image_text_split, model_recipe
from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import ExpertsParams, FrozenParams, ModelParams
from lors_distill.core.data import Normalizer
from lors_distill.core.device import resolve_device
from lors_distill.core.experts import train_expert
from lors_distill.core.flat import ParameterLayout
from lors_distill.core.models import pixel_normalization
from lors_distill.core.seeding import derive_seed
from lors_distill.provenance import TRAINING_INPUTS, trajectory_settings

logger = logging.getLogger(__name__)


def train_one_expert(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    model_cfg: ModelParams,
    experts_cfg: ExpertsParams,
    *,
    index: int,
    backbone: TensorBundle | None = None,
    frozen: FrozenParams | None = None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train expert ``index`` and return its trajectory and report.

    With a ``backbone`` (the frozen-backbone protocol, ``frozen`` its settings) the expert
    trains an image head and the text head on that fixed backbone; its trajectory holds the two
    heads only.

    Returns:
        The trajectory bundle (``trajectory`` ``(epochs + 1, P)`` float32, ``train_loss``
        ``(epochs,)``, ``image_mean``/``image_std`` ``(3,)``; metadata: model recipe, parameter
        layout, seed, training config, validation recall) and a JSON-able report.
    """
    if index >= experts_cfg.num_experts:
        raise ValueError(
            f"expert {index} requested but experts.num_experts is {experts_cfg.num_experts}"
        )
    train = image_text_split(train_images, train_text_features)
    val = image_text_split(val_images, val_text_features)
    recipe = model_recipe(model_cfg, train.images.shape[-1], train.text.shape[1])
    if backbone is not None:
        recipe = recipe.frozen(backbone)
    seed = derive_seed(experts_cfg.seed, index)
    model = recipe.build(seed, backbone=backbone)
    mean, std = pixel_normalization(
        model_cfg.normalization, recipe.encoder.name, model.image_encoder, train.images
    )
    normalizer = Normalizer(mean, std)
    device = resolve_device(experts_cfg.device)
    result = train_expert(
        model,
        train,
        val,
        experts_cfg,
        normalizer,
        seed,
        device,
        description=f"{'frozen-backbone ' if backbone is not None else ''}expert {index}",
        cache_features=backbone is not None and frozen is not None and frozen.cache_features,
    )
    recall = {k: round(v, 4) for k, v in result.val_recall.items()}
    logger.info(
        "expert %d: final loss %.4f, val %s, %.0f images/s",
        index,
        float(result.train_loss[-1]),
        ", ".join(f"{k} {v:.1f}" for k, v in recall.items()),
        result.images_per_second,
    )
    layout = ParameterLayout.of(model)
    bundle = TensorBundle(
        tensors={
            "trajectory": result.trajectory,
            "train_loss": result.train_loss,
            "image_mean": torch.tensor(mean, dtype=torch.float32),
            "image_std": torch.tensor(std, dtype=torch.float32),
        },
        metadata={
            "expert_index": index,
            "seed": seed,
            "model": recipe.to_json(),
            "layout": layout.to_json(),
            "experts": experts_cfg.model_dump(mode="json"),
            "val_recall": recall,
            "provenance": {
                "settings": trajectory_settings(model_cfg, experts_cfg, frozen),
                "inputs": {
                    name: bundle.sha256()
                    for name, bundle in zip(
                        TRAINING_INPUTS,
                        (train_images, train_text_features, val_images, val_text_features),
                        strict=True,
                    )
                }
                | ({"backbone": backbone.sha256()} if backbone is not None else {}),
            },
        },
    )
    report = {
        "expert_index": index,
        "seed": seed,
        "parameters": layout.size,
        "train_loss": [round(float(x), 5) for x in result.train_loss],
        "val_recall": recall,
        "images_per_second": round(result.images_per_second, 1),
    }
    return bundle, report


def train_one_frozen_expert(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    model_cfg: ModelParams,
    experts_cfg: ExpertsParams,
    backbone: TensorBundle,
    frozen: FrozenParams,
    *,
    index: int,
) -> tuple[TensorBundle, dict[str, Any]]:
    """:func:`train_one_expert` in the frozen-backbone protocol (heads only, on ``backbone``)."""
    return train_one_expert(
        train_images,
        train_text_features,
        val_images,
        val_text_features,
        model_cfg,
        experts_cfg,
        index=index,
        backbone=backbone,
        frozen=frozen,
    )


def summarise_experts(*reports: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, Figure]:
    """Collect the expert reports: recall mean/std (the full-data reference), loss curves.

    Returns:
        A summary JSON object, a long table ``expert, epoch, train_loss`` and a figure of the
        loss curves.
    """
    recalls = pd.DataFrame([r["val_recall"] for r in reports])
    summary = {
        "num_experts": len(reports),
        "val_recall_mean": {k: round(float(v), 4) for k, v in recalls.mean().items()},
        "val_recall_std": {k: round(float(v), 4) for k, v in recalls.std(ddof=0).items()},
        "images_per_second_mean": round(
            sum(r["images_per_second"] for r in reports) / len(reports), 1
        ),
        "experts": list(reports),
    }
    history = pd.DataFrame(
        [
            {"expert": r["expert_index"], "epoch": epoch + 1, "train_loss": loss}
            for r in reports
            for epoch, loss in enumerate(r["train_loss"])
        ]
    )
    figure = Figure(figsize=(6, 4))
    axis = figure.add_subplot()
    for expert, rows in history.groupby("expert"):
        axis.plot(rows["epoch"], rows["train_loss"], marker="o", label=f"expert {expert}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("InfoNCE loss (train)")
    mean_recall = summary["val_recall_mean"].get("mean_recall", float("nan"))
    axis.set_title(f"Expert training ({len(reports)} experts, val mean recall {mean_recall:.1f}%)")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    logger.info("experts: val recall mean %s", summary["val_recall_mean"])
    return summary, history, figure

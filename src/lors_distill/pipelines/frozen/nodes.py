"""Nodes of the ``frozen`` pipeline (the rest reuses the experts, distillation, baselines and
evaluation nodes with a backbone)."""

from __future__ import annotations

import logging
from typing import Any

from lors_distill.core.artifacts import image_text_split, model_recipe
from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import ExpertsParams, FrozenParams, ModelParams, ParameterError
from lors_distill.core.data import Normalizer
from lors_distill.core.device import resolve_device
from lors_distill.core.experts import train_expert
from lors_distill.core.models import pixel_normalization

logger = logging.getLogger(__name__)


def make_backbone(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    model_cfg: ModelParams,
    experts_cfg: ExpertsParams,
    frozen: FrozenParams,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The frozen backbone every row of the frozen-backbone protocol shares: the image encoder's
    weights (its state dict).

    ``frozen.backbone: train``: a dual encoder of the ``model`` section is trained with InfoNCE
    on the real train split for ``frozen.backbone_epochs`` epochs with the experts' settings
    (seed ``frozen.seed``), and its image encoder kept: pretraining on the real data, for data
    without pretrained image weights. ``pretrained``: the encoder as ``model.pretrained`` gives
    it (hub or checkpoint weights), unchanged.

    Returns:
        The backbone bundle and a report (source, epochs, validation recall of the trained dual
        encoder).
    """
    if frozen.backbone == "pretrained" and model_cfg.pretrained is False:
        raise ParameterError(
            "frozen.backbone: pretrained takes the weights model.pretrained gives, but "
            "model.pretrained is false: set it (true for the hub, or a checkpoint path) or use "
            "frozen.backbone: train"
        )
    train = image_text_split(train_images, train_text_features)
    recipe = model_recipe(model_cfg, train.images.shape[-1], train.text.shape[1])
    model = recipe.build(frozen.seed)
    mean, std = pixel_normalization(
        model_cfg.normalization, recipe.encoder.name, model.image_encoder, train.images
    )
    report: dict[str, Any] = {
        "source": frozen.backbone,
        "image_encoder": recipe.encoder.name,
        "pretrained": model_cfg.pretrained,
        "seed": frozen.seed,
    }
    if frozen.backbone == "train":
        result = train_expert(
            model,
            train,
            image_text_split(val_images, val_text_features),
            experts_cfg.updated(epochs=frozen.backbone_epochs),
            Normalizer(mean, std),
            frozen.seed,
            resolve_device(experts_cfg.device),
            description="backbone",
            record=False,
        )
        report.update(
            epochs=frozen.backbone_epochs,
            train_loss=[round(float(x), 5) for x in result.train_loss],
            val_recall={k: round(v, 4) for k, v in result.val_recall.items()},
        )
        logger.info(
            "backbone: %d epochs on the real train split, val mean recall %.2f",
            frozen.backbone_epochs,
            result.val_recall["mean_recall"],
        )
    tensors = {
        name: value.detach().cpu().contiguous().clone()
        for name, value in model.image_encoder.state_dict().items()
    }
    bundle = TensorBundle(tensors, {**report, "image_mean": list(mean), "image_std": list(std)})
    return bundle, {**report, "content_sha256": bundle.sha256()}

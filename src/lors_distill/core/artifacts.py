"""Core objects from the pipeline's stored artifacts (``TensorBundle``s on disk).

Shared by the pipelines that read the same artifacts (experts, baselines, evaluation), so that no
pipeline imports another's nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.data import ImageTextSplit, Normalizer
from lors_distill.core.flat import load_flat
from lors_distill.core.models import DualEncoder, ImageEncoderSpec, ModelRecipe

if TYPE_CHECKING:
    from lors_distill.core.config import ModelParams


def image_text_split(images: TensorBundle, features: TensorBundle) -> ImageTextSplit:
    """Join an image bundle and its caption-feature bundle into one split."""
    return ImageTextSplit(
        images=images["images"],
        text=features["embeddings"].float(),
        caption_image=features["image_index"].long(),
    )


def expert_normalizer(trajectory: TensorBundle) -> Normalizer:
    """The pixel normalisation the expert was trained with."""
    return Normalizer(
        tuple(trajectory["image_mean"].tolist()), tuple(trajectory["image_std"].tolist())
    )


def expert_model(
    trajectory: TensorBundle, snapshot: int = -1, backbone: TensorBundle | None = None
) -> tuple[DualEncoder, Normalizer]:
    """The expert's model at ``snapshot`` (default: the end of training) and its normaliser;
    a frozen-backbone expert needs its ``backbone`` bundle."""
    model = ModelRecipe.from_json(trajectory.metadata["model"]).build(seed=0, backbone=backbone)
    load_flat(model, trajectory["trajectory"][snapshot])
    return model, expert_normalizer(trajectory)


def model_recipe(model: ModelParams, image_size: int, text_dim: int) -> ModelRecipe:
    """The dual-encoder recipe from the ``model`` parameters and the data's shapes."""
    encoder = ImageEncoderSpec(
        name=model.image_encoder,
        image_size=image_size,
        pretrained=model.pretrained,
        convnet=model.convnet,
    )
    return ModelRecipe(encoder, text_dim, model.text_dropout, model.temperature)

"""Assembling one distillation run from the stored artifacts and the ``distillation``
parameters: the experts' recipe, the synthetic set initialised from real pairs, the expert bank,
the matcher on the resolved fast path, the outer loop, and the fingerprint that names its
checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import DistillationParams
from lors_distill.core.data import Normalizer
from lors_distill.core.device import bf16_supported
from lors_distill.core.distill.expert_bank import ExpertBank
from lors_distill.core.distill.matcher import FastPath, TrajectoryMatcher
from lors_distill.core.distill.outer import Distiller
from lors_distill.core.distill.synthetic import SyntheticSet, init_synthetic_pairs
from lors_distill.core.flat import ParameterLayout
from lors_distill.core.models import ModelRecipe
from lors_distill.core.similarity import build_similarity


def experts_recipe(trajectories: Sequence[TensorBundle]) -> tuple[ModelRecipe, ParameterLayout]:
    """The model recipe and parameter layout all experts share (an error if they differ)."""
    if not trajectories:
        raise ValueError("distillation needs at least one expert trajectory")
    first = trajectories[0].metadata
    for other in trajectories[1:]:
        if other.metadata["model"] != first["model"] or other.metadata["layout"] != first["layout"]:
            raise ValueError(
                f"expert {other.metadata['expert_index']} was trained with another model than "
                f"expert {first['expert_index']}: rerun the experts pipeline"
            )
    return ModelRecipe.from_json(first["model"]), ParameterLayout.from_json(first["layout"])


def fingerprint(
    config: DistillationParams,
    runtime: dict[str, Any],
    trajectories: Sequence[TensorBundle],
    *data: torch.Tensor,
) -> str:
    """Identifies a distillation run for checkpoint resumption: the configuration (except the
    iteration count, so a finished run can be extended, and where checkpoints go), what
    ``auto`` resolved to on this machine (``runtime``: a CPU run never resumes a GPU bf16
    checkpoint), and the contents of the expert snapshots and training data it starts from."""
    settings = config.model_dump(
        mode="json", exclude={"iterations", "checkpoint_every", "checkpoint_dir"}
    )
    settings["runtime"] = runtime
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    last = config.max_start_epoch + config.expert_epochs
    for tensor in [t["trajectory"][:last] for t in trajectories] + list(data):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fast_path(config: DistillationParams, device: torch.device) -> FastPath:
    """The fast path, with ``auto`` resolved: bf16 autocast and channels_last on
    CUDA (bf16 only where the GPU supports it natively), plain fp32 on CPU (where bf16 is
    slower)."""
    cuda = device.type == "cuda"
    auto_precision = "bf16" if bf16_supported(device) else "fp32"  # pre-Ampere GPUs: fp32
    precision = auto_precision if config.precision == "auto" else config.precision
    channels_last = cuda if config.channels_last == "auto" else config.channels_last
    return FastPath(precision, channels_last)


@dataclass
class DistillationRun:
    """A run ready to start: the outer loop and what the distilled set's metadata records."""

    distiller: Distiller  # holds the synthetic set (.syn) and the expert bank (.bank)
    recipe: ModelRecipe  # the experts' (the set is evaluated with it)
    normalizer: Normalizer
    chosen: torch.Tensor  # the train images the synthetic pairs started from
    runtime: dict[str, Any]  # what ``auto`` resolved to here
    fingerprint: str


def prepare_run(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    config: DistillationParams,
    trajectories: Sequence[TensorBundle],
    device: torch.device,
    backbone: TensorBundle | None = None,
) -> DistillationRun:
    """Everything one outer loop needs, every random choice drawn from ``config.seed``
    (``backbone``: the frozen backbone of frozen-backbone experts)."""
    recipe, layout = experts_recipe(trajectories)
    # distillation.temperature changes the inner loop only; the distilled set keeps the experts'
    # recipe, so it is evaluated at the experts' temperature like every other set (as in the
    # reference, which trains and scores every evaluation model at 0.07)
    inner_recipe = recipe
    if config.temperature is not None:
        inner_recipe = replace(recipe, temperature=config.temperature)
    generator = torch.Generator().manual_seed(config.seed)
    first = trajectories[0]
    normalizer = Normalizer(tuple(first["image_mean"].tolist()), tuple(first["image_std"].tolist()))
    images, texts, chosen = init_synthetic_pairs(
        train_images["images"],
        train_text_features["embeddings"].float(),
        train_text_features["image_index"].long(),
        config.num_pairs,
        normalizer,
        generator,
        config.init,
    )
    similarity = build_similarity(
        config.sim_type, config.num_pairs, config.rank, config.alpha, generator
    )
    syn = SyntheticSet(images, texts, config.lr_init, similarity).to(device)
    model = inner_recipe.build(seed=0, backbone=backbone).to(device).train()
    last_needed = config.max_start_epoch - 1 + config.expert_epochs
    bank = ExpertBank(
        [t["trajectory"] for t in trajectories], last_needed, device, config.expert_sampling
    )
    fast = fast_path(config, device)
    runtime = {
        "device": device.type,
        "precision": fast.precision,
        "channels_last": fast.channels_last,
        "tf32": config.tf32 and device.type == "cuda",
    }
    matcher = TrajectoryMatcher(model, layout, config, fast)
    distiller = Distiller(syn, matcher, bank, config, generator)
    name = fingerprint(
        config, runtime, trajectories, train_images["images"], train_text_features["embeddings"]
    )
    return DistillationRun(distiller, recipe, normalizer, chosen, runtime, name)

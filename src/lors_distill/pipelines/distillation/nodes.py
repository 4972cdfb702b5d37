"""Nodes of the ``distillation`` pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import (
    BaselineOverrides,
    DistillationParams,
    parse_section,
    to_dataclass,
)
from lors_distill.core.data import Normalizer
from lors_distill.core.device import bf16_supported, resolve_device, tf32_matmuls
from lors_distill.core.distill import (
    Distiller,
    ExpertBank,
    MatchingConfig,
    OuterConfig,
    SyntheticSet,
    TrajectoryMatcher,
    init_synthetic_pairs,
    method_settings,
    run_distillation,
)
from lors_distill.core.distilled import similarity_from_bundle, to_bundle
from lors_distill.core.flat import ParameterLayout
from lors_distill.core.models import ModelRecipe
from lors_distill.core.plots import distillation_curves, similarity_heatmap, synthetic_pairs_figure
from lors_distill.core.similarity import build_similarity, similarity_stats

logger = logging.getLogger(__name__)


def _experts_recipe(trajectories: tuple[TensorBundle, ...]) -> tuple[ModelRecipe, ParameterLayout]:
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


def _fingerprint(
    config: DistillationParams,
    runtime: dict[str, Any],
    trajectories: tuple[TensorBundle, ...],
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


def fast_path(config: DistillationParams, device: torch.device) -> MatchingConfig:
    """The inner loop's settings, with ``auto`` resolved: bf16 autocast and channels_last on
    CUDA (bf16 only where the GPU supports it natively), plain fp32 on CPU (where bf16 is
    slower)."""
    cuda = device.type == "cuda"
    auto_precision = "bf16" if bf16_supported(device) else "fp32"  # pre-Ampere GPUs: fp32
    precision = auto_precision if config.precision == "auto" else config.precision
    channels_last = cuda if config.channels_last == "auto" else config.channels_last
    return to_dataclass(MatchingConfig, config, precision=precision, channels_last=channels_last)


def distill(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    params: dict[str, Any],
    *trajectories: TensorBundle,
    method: str = "lors",
) -> tuple[TensorBundle, dict[str, Any], pd.DataFrame]:
    """Learn N synthetic pairs, their similarity and two inner learning rates by matching the
    expert trajectories.

    Args:
        train_images: the real train images (initialisation).
        train_text_features: their caption vectors.
        params: the ``distillation`` parameter section.
        trajectories: the expert trajectory bundles.
        method: ``lors``, or a baseline that fixes part of the configuration (``tesla_vl``:
            ``S = I`` with TESLA's gradient; ``mtt_vl``: ``S = I`` with the exact gradient; see
            :func:`lors_distill.core.distill.method_settings`).

    Returns:
        The distilled set (see :mod:`lors_distill.core.distilled`), its metadata as JSON (also in
        the safetensors header) and the per-iteration history (loss, per-branch losses, learning
        rates, S statistics).
    """
    fixed = method_settings(method, params.get("grad_mode", ""))
    config = parse_section("distillation", {**params, **fixed})
    recipe, layout = _experts_recipe(trajectories)
    # distillation.temperature changes the inner loop only; the distilled set keeps the experts'
    # recipe, so it is evaluated at the experts' temperature like every other set (as in the
    # reference, which trains and scores every evaluation model at 0.07)
    inner_recipe = recipe
    if config.temperature is not None:
        inner_recipe = replace(recipe, temperature=config.temperature)
    device = resolve_device(config.device)
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
    model = inner_recipe.build(seed=0).to(device).train()
    last_needed = config.max_start_epoch - 1 + config.expert_epochs
    bank = ExpertBank(
        [t["trajectory"] for t in trajectories], last_needed, device, config.expert_sampling
    )
    matching = fast_path(config, device)
    runtime = {
        "device": device.type,
        "precision": matching.precision,
        "channels_last": matching.channels_last,
        "tf32": config.tf32 and device.type == "cuda",
    }
    matcher = TrajectoryMatcher(model, layout, matching)
    distiller = Distiller(syn, matcher, bank, to_dataclass(OuterConfig, config), generator)
    fingerprint = _fingerprint(
        config, runtime, trajectories, train_images["images"], train_text_features["embeddings"]
    )
    checkpoint = Path(config.checkpoint_dir) / f"distillation_{fingerprint}.safetensors"
    logger.info(
        "%s: distilling %d pairs (%s similarity, %s gradient) from %d experts, %d iterations; "
        "checkpoint %s",
        method,
        config.num_pairs,
        config.sim_type,
        config.grad_mode,
        bank.num_experts,
        config.iterations,
        checkpoint,
    )
    with tf32_matmuls(device, config.tf32):
        rows = run_distillation(
            distiller,
            config.iterations,
            checkpoint,
            config.checkpoint_every,
            fingerprint,
            description=f"distillation ({method})",
        )
    history = pd.DataFrame(rows)
    distilled = to_bundle(
        syn,
        {
            "method": method,
            "image_mean": list(normalizer.mean),
            "image_std": list(normalizer.std),
            "model": recipe.to_json(),
            "init_images": chosen.tolist(),
            "config": config.model_dump(mode="json"),
            "runtime": runtime,
        },
    )
    first_loss = history["loss"].head(10).mean()
    last_loss = history["loss"].tail(10).mean()
    logger.info("matching loss %.4f -> %.4f (first/last 10 iterations)", first_loss, last_loss)
    summary = {
        **distilled.metadata,
        "learned_lrs": distilled["lrs"].tolist(),
        **similarity_stats(syn.similarity),
        "matching_loss_first10": float(first_loss),
        "matching_loss_last10": float(last_loss),
        "tensors": {name: list(t.shape) for name, t in distilled.tensors.items()},
    }
    return distilled, summary, history


def distill_baseline(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    params: dict[str, Any],
    overrides: dict[str, Any],
    *trajectories: TensorBundle,
    method: str,
) -> tuple[TensorBundle, dict[str, Any], pd.DataFrame]:
    """:func:`distill` for a trajectory baseline (``tesla_vl``, ``mtt_vl``) with its own
    settings (``params:baselines.<method>``: outer rates, expert window; see
    :class:`lors_distill.core.config.BaselineOverrides`) in place of ``distillation``'s."""
    own = BaselineOverrides.model_validate(overrides).applied()
    if own:
        logger.info("%s: own settings %s (baselines.%s)", method, own, method)
    return distill(
        train_images, train_text_features, {**params, **own}, *trajectories, method=method
    )


def report_distillation(
    distilled: TensorBundle,
    history: pd.DataFrame,
    captions: pd.DataFrame,
    train_text_features: TensorBundle,
    shown: int = 24,
) -> tuple[Figure, Figure, Figure]:
    """The report plots: synthetic images with the nearest real train caption to their text
    vector, the learned similarity matrix, and the loss / learning-rate curves."""
    meta = distilled.metadata
    normalizer = Normalizer(tuple(meta["image_mean"]), tuple(meta["image_std"]))
    pixels = normalizer.to_uint8(distilled["images"][:shown])
    train_captions = captions[captions["split"] == "train"]["caption"].tolist()
    real = F.normalize(train_text_features["embeddings"].float(), dim=1)
    synthetic = F.normalize(distilled["texts"][:shown].float(), dim=1)
    nearest = (synthetic @ real.T).argmax(dim=1).tolist()
    grid = synthetic_pairs_figure(
        pixels,
        [train_captions[i] for i in nearest],
        title=f"{meta['method']}: first {len(nearest)} of {meta['num_pairs']} synthetic pairs "
        "(caption = nearest real train caption to the synthetic text vector)",
    )
    matrix = similarity_from_bundle(distilled).matrix()
    heatmap = similarity_heatmap(
        matrix, f"learned similarity S ({meta['sim_type']}, N={meta['num_pairs']})"
    )
    return grid, heatmap, distillation_curves(history)

"""Nodes of the ``distillation`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch.nn.functional as F
from matplotlib.figure import Figure

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import (
    BaselinesParams,
    DistillationParams,
    FrozenParams,
    check_train_size,
)
from lors_distill.core.data import Normalizer
from lors_distill.core.device import resolve_device, tf32_matmuls
from lors_distill.core.distill import (
    BASELINES,
    method_settings,
    run_distillation,
)
from lors_distill.core.distill.setup import prepare_run
from lors_distill.core.distilled import similarity_from_bundle, to_bundle
from lors_distill.core.plots import distillation_curves, similarity_heatmap, synthetic_pairs_figure
from lors_distill.core.similarity import similarity_stats

logger = logging.getLogger(__name__)


def distill(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    params: DistillationParams,
    *trajectories: TensorBundle,
    method: str = "lors",
    label: str | None = None,
    backbone: TensorBundle | None = None,
) -> tuple[TensorBundle, dict[str, Any], pd.DataFrame]:
    """Learn N synthetic pairs, their similarity and two inner learning rates by matching the
    expert trajectories.

    Args:
        train_images: the real train images (initialisation).
        train_text_features: their caption vectors.
        params: the ``distillation`` parameters.
        trajectories: the expert trajectory bundles.
        method: ``lors``, or a baseline that fixes part of the configuration (``tesla_vl``:
            ``S = I`` with TESLA's gradient; ``mtt_vl``: ``S = I`` with the exact gradient; see
            :func:`lors_distill.core.distill.method_settings`; ``lors_blend``: LoRS with
            representation blending).
        label: the row's name in logs and metadata (default: ``method``; the frozen-backbone
            protocol's rows: ``repblend``, ``lors_frozen``, ...).
        backbone: the frozen backbone of frozen-backbone experts (their recipe needs it).

    Returns:
        The distilled set (see :mod:`lors_distill.core.distilled`), its metadata as JSON (also in
        the safetensors header) and the per-iteration history (loss, per-branch losses, learning
        rates, S statistics).
    """
    label = label or method
    config = params.updated(**method_settings(method, params))
    check_train_size(config.num_pairs, train_images["images"].shape[0])  # under any runner
    device = resolve_device(config.device)
    run = prepare_run(train_images, train_text_features, config, trajectories, device, backbone)
    # the one file a node reads and writes outside the catalog, on purpose: resume checkpoints,
    # written during the run (a catalog output is saved only when the node returns)
    checkpoint = Path(config.checkpoint_dir) / f"distillation_{run.fingerprint}.safetensors"
    logger.info(
        "%s: distilling %d pairs (%s similarity, %s gradient%s%s) from %d experts, "
        "%d iterations; checkpoint %s",
        label,
        config.num_pairs,
        config.sim_type,
        config.grad_mode,
        f", blending alpha {config.blend.alpha}" if config.blend.active else "",
        ", frozen backbone" if backbone is not None else "",
        run.distiller.bank.num_experts,
        config.iterations,
        checkpoint,
    )
    with tf32_matmuls(device, config.tf32):
        rows = run_distillation(
            run.distiller,
            config.iterations,
            checkpoint,
            config.checkpoint_every,
            run.fingerprint,
            description=f"distillation ({label})",
        )
    history = pd.DataFrame(rows)
    distilled = to_bundle(
        run.distiller.syn,
        {
            "method": label,
            "image_mean": list(run.normalizer.mean),
            "image_std": list(run.normalizer.std),
            "model": run.recipe.to_json(),
            "init_images": run.chosen.tolist(),
            "config": config.model_dump(mode="json"),
            "runtime": run.runtime,
        },
    )
    first_loss = history["loss"].head(10).mean()
    last_loss = history["loss"].tail(10).mean()
    logger.info("matching loss %.4f -> %.4f (first/last 10 iterations)", first_loss, last_loss)
    summary = {
        **distilled.metadata,
        "learned_lrs": distilled["lrs"].tolist(),
        **similarity_stats(run.distiller.syn.similarity),
        "matching_loss_first10": float(first_loss),
        "matching_loss_last10": float(last_loss),
        "tensors": {name: list(t.shape) for name, t in distilled.tensors.items()},
    }
    return distilled, summary, history


def _own_settings(params: DistillationParams, baselines: BaselinesParams, method: str):
    """``params`` with a trajectory baseline's own settings (``baselines.<method>``: outer
    rates, expert window; see :class:`lors_distill.core.config.BaselineOverrides`)."""
    own = getattr(baselines, method).applied()
    if own:
        logger.info("%s: own settings %s (baselines.%s)", method, own, method)
    return params.updated(**own)


def distill_baseline(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    params: DistillationParams,
    baselines: BaselinesParams,
    *trajectories: TensorBundle,
    method: str,
) -> tuple[TensorBundle, dict[str, Any], pd.DataFrame]:
    """:func:`distill` for a trajectory baseline (``tesla_vl``, ``mtt_vl``) with its own
    settings in place of ``distillation``'s."""
    params = _own_settings(params, baselines, method)
    return distill(train_images, train_text_features, params, *trajectories, method=method)


def distill_on_backbone(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    params: DistillationParams,
    baselines: BaselinesParams,
    frozen: FrozenParams,
    backbone: TensorBundle,
    *trajectories: TensorBundle,
    method: str,
    label: str,
) -> tuple[TensorBundle, dict[str, Any], pd.DataFrame]:
    """:func:`distill` in the frozen-backbone protocol (row ``label``, e.g. ``repblend``):
    from the frozen-backbone experts, on their ``backbone``, with the protocol's settings
    (``frozen.distillation``), a baseline's own settings as in the full fine-tuning protocol
    (``baselines.<method>``), then the row's own (``frozen.<label>``)."""
    protocol = frozen.distillation.applied()
    if protocol:
        logger.info("%s: the frozen-backbone protocol's settings %s", label, protocol)
        params = params.updated(**protocol)
    if method in BASELINES:
        params = _own_settings(params, baselines, method)
    own = getattr(frozen, label).applied()
    if own:
        logger.info("%s: own settings %s (frozen.%s)", label, own, label)
        params = params.updated(**own)
    return distill(
        train_images,
        train_text_features,
        params,
        *trajectories,
        method=method,
        label=label,
        backbone=backbone,
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

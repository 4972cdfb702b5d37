"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from lors_distill.core.artifacts import expert_model, image_text_split
from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import (
    EvaluationParams,
    ExpertsParams,
    FeaturesParams,
    IngestionParams,
    ModelParams,
)
from lors_distill.core.coresets import CORESET_METHODS, teacher_similarity
from lors_distill.core.data import Normalizer
from lors_distill.core.device import describe_machine, resolve_device
from lors_distill.core.distill import METHODS
from lors_distill.core.distilled import similarity_from_bundle
from lors_distill.core.evaluate import RetrievalSplit, SmallSet, evaluate_small_set
from lors_distill.core.modality import embed_pairs, modality_numbers, pca_basis
from lors_distill.core.models import ImageEncoderSpec, ModelRecipe
from lors_distill.core.plots import modality_figure, recall_bars, recall_vs_budget_figure
from lors_distill.core.reports import (
    FINE_TUNE,
    FROZEN,
    SELECTION,
    budget_entry,
    comparison,
    modality_metrics,
    modality_table,
    setup_id,
    summarise_runs,
)
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.scorer import scorer_bundle
from lors_distill.core.seeding import derive_seed
from lors_distill.core.similarity import IdentitySimilarity

logger = logging.getLogger(__name__)


@dataclass
class _Evaluation:
    """What every fresh model trained on one set shares (see :func:`evaluate_set`)."""

    recipe: ModelRecipe
    data: SmallSet
    normalizer: Normalizer
    training: EvaluationParams
    seeds: list[int]
    device: torch.device
    targets: str


def _prepare(
    small_set: TensorBundle,
    config: EvaluationParams,
    *,
    hard_targets: bool = False,
    cross_arch: bool = False,
) -> _Evaluation:
    meta = small_set.metadata
    recipe = ModelRecipe.from_json(meta["model"])
    if cross_arch:
        recipe = ModelRecipe(
            ImageEncoderSpec(
                config.cross_arch.image_encoder,
                recipe.encoder.image_size,
                False,
                config.cross_arch.convnet,
            ),
            recipe.text_dim,
            recipe.dropout,
            recipe.temperature,
        )
    n = small_set["images"].shape[0]
    similarity = IdentitySimilarity(n) if hard_targets else similarity_from_bundle(small_set)
    return _Evaluation(
        recipe=recipe,
        data=SmallSet(small_set["images"], small_set["texts"], similarity, small_set["lrs"]),
        normalizer=Normalizer(tuple(meta["image_mean"]), tuple(meta["image_std"])),
        training=config,
        seeds=[derive_seed(config.seed, index) for index in range(config.num_eval)],
        device=resolve_device(config.device),
        targets="identity" if hard_targets else meta.get("sim_type", "identity"),
    )


def _split(images: TensorBundle, text_features: TensorBundle) -> RetrievalSplit:
    return RetrievalSplit(
        images["images"],
        text_features["embeddings"].float(),
        text_features["image_index"].long(),
    )


def evaluate_set(
    small_set: TensorBundle,
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    config: EvaluationParams,
    *,
    method: str,
    hard_targets: bool = False,
    cross_arch: bool = False,
    keep_model: bool = False,
    backbone: TensorBundle | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], TensorBundle]:
    """Train ``evaluation.num_eval`` fresh dual encoders on one set; score each on the test split
    after the last epoch and, with ``evaluation.select_every``, at the epoch chosen on the
    validation split.

    Args:
        small_set: a distilled set or a coreset bundle (see :mod:`lors_distill.core.distilled`).
        hard_targets: use ``S = I`` instead of the set's learned similarity (the ``lors_hard``
            control).
        cross_arch: use the image encoder of ``evaluation.cross_arch`` instead of the experts'.
        keep_model: also return the first seed's model (after its last epoch) as a scorer
            bundle, to be served and logged to MLflow.
        backbone: the frozen backbone of a set made in the frozen-backbone protocol (its
            models train the two heads only, on this backbone).

    Returns:
        ``{"method", "mean", "std", "runs", "val_selected", ...}`` with Recall@K in percent
        (and the scorer bundle with ``keep_model``).
    """
    if cross_arch and config.cross_arch is None:
        return {"method": method, "skipped": "evaluation.cross_arch is not set"}
    setup = _prepare(small_set, config, hard_targets=hard_targets, cross_arch=cross_arch)
    runs, first_model = evaluate_small_set(
        lambda seed: setup.recipe.build(seed, backbone=backbone),
        setup.data,
        _split(test_images, test_text_features),
        setup.normalizer,
        setup.training,
        setup.seeds,
        setup.device,
        val=_split(val_images, val_text_features),
        select_every=config.select_every,
    )
    result = summarise_runs(
        method,
        runs,
        num_pairs=setup.data.images.shape[0],
        targets=setup.targets,
        image_encoder=setup.recipe.encoder.name,
        protocol=protocol_of(setup.recipe),
        epochs=config.epochs,
        selection=SELECTION,
        machine=describe_machine(setup.device),
    )
    selected = result.get("val_selected")
    logger.info(
        "%s: mean recall %.2f +/- %.2f (last epoch)%s",
        method,
        result["mean"]["mean_recall"],
        result["std"]["mean_recall"],
        f", {selected['mean']['mean_recall']:.2f} +/- {selected['std']['mean_recall']:.2f} "
        f"(validation-chosen epochs {selected['epochs']})"
        if selected
        else "",
    )
    if not keep_model:
        return result
    model = scorer_bundle(
        first_model.cpu(),
        setup.recipe,
        setup.normalizer,
        method=method,
        seed=setup.seeds[0],
        epochs=config.epochs,
    )
    return result, model


def protocol_of(recipe: ModelRecipe) -> str:
    """The training protocol a recipe's models follow (a column of the comparison table)."""
    return FROZEN if recipe.frozen_backbone else FINE_TUNE


def evaluate_set_on_backbone(
    small_set: TensorBundle,
    backbone: TensorBundle,
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    config: EvaluationParams,
    *,
    method: str,
) -> dict[str, Any]:
    """:func:`evaluate_set` for a set of the frozen-backbone protocol: fresh heads on the same
    frozen ``backbone`` for every set of the protocol."""
    return evaluate_set(
        small_set,
        test_images,
        test_text_features,
        val_images,
        val_text_features,
        config,
        method=method,
        backbone=backbone,
    )


def evaluate_external_set(
    external: TensorBundle | None,
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    config: EvaluationParams,
) -> dict[str, Any]:
    """Evaluate the set at ``evaluation.external_set`` (a run produced elsewhere; the catalog's
    ``external_set`` reads it), if set."""
    if external is None:
        return {"method": "external", "skipped": "evaluation.external_set is not set"}
    path = Path(config.external_set or "")
    missing = sorted({"images", "texts", "lrs"} - external.tensors.keys())
    if missing or "model" not in external.metadata:
        raise ValueError(
            f"evaluation.external_set: {path} is not a distilled set (it lacks "
            f"{', '.join(missing) or 'the model recipe'}; it holds {', '.join(external.tensors)})"
        )
    result = evaluate_set(
        external,
        test_images,
        test_text_features,
        val_images,
        val_text_features,
        config,
        method="external",
    )
    return {**result, "path": str(path.resolve())}


def make_random_teacher_set(
    random_set: TensorBundle, config: EvaluationParams, *trajectories: TensorBundle
) -> TensorBundle:
    """The random coreset with soft targets from a trained expert (``random_teacher`` control).

    ``S_ij`` is the expert's cosine similarity between coreset image ``i`` and text ``j``,
    min-max scaled over the whole matrix to ``[0, 1]``, with the diagonal set to 1 (each image's
    own caption stays a full positive). This isolates what soft labels alone are worth.
    """
    model, _ = expert_model(trajectories[config.teacher_expert])
    scaled = teacher_similarity(model, random_set["images"], random_set["texts"])
    return TensorBundle(
        {**random_set.tensors, "similarity.weight": scaled},
        {
            **random_set.metadata,
            "method": "random_teacher",
            "sim_type": "full",
            "teacher_expert": config.teacher_expert,
        },
    )


def evaluate_full_data(
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    config: EvaluationParams,
    *trajectories: TensorBundle,
    backbone: TensorBundle | None = None,
    method: str = "full_data",
) -> dict[str, Any]:
    """The full-data upper bound: every expert after its last epoch, on the test split, scored
    on ``evaluation.device`` like every other set (frozen-backbone experts on their
    ``backbone``)."""
    runs = []
    device = resolve_device(config.device)
    for trajectory in trajectories:
        model, normalizer = expert_model(trajectory, backbone=backbone)
        runs.append(
            evaluate_model(
                model,
                test_images["images"],
                test_text_features["embeddings"].float(),
                test_text_features["image_index"].long(),
                normalizer,
                device,
            )
        )
    return summarise_runs(
        method,
        runs,
        selection="last expert epoch",
        protocol=FROZEN if backbone is not None else FINE_TUNE,
        machine=describe_machine(device),
    )


def evaluate_full_data_on_backbone(
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    config: EvaluationParams,
    backbone: TensorBundle,
    *trajectories: TensorBundle,
) -> dict[str, Any]:
    """The frozen-backbone protocol's upper bound: its experts on their backbone."""
    return evaluate_full_data(
        test_images,
        test_text_features,
        config,
        *trajectories,
        backbone=backbone,
        method="full_data_frozen",
    )


# real train pairs drawn behind each set in the modality plot (and measured alike)
_REAL_PAIRS_SHOWN = 1000


def diagnose_modality_gap(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    config: EvaluationParams,
    trajectory: TensorBundle,
    *sets: TensorBundle,
    names: tuple[str, ...],
    backbone: TensorBundle | None = None,
) -> tuple[dict[str, Any], Figure]:
    """The modality-collapse diagnostic (:mod:`lors_distill.core.modality`) of each set in
    ``sets`` (named ``names``; the random coreset is the random real subset of the same size)
    under the first expert's final parameters (``trajectory``; on ``backbone`` in the
    frozen-backbone protocol), with up to 1000 real train pairs (one caption each, drawn with
    ``evaluation.seed``) measured alike and drawn faintly behind, all in the 2-D PCA plane of
    the real pairs' embeddings.

    Returns:
        ``{"protocol", "model", "real_pairs": numbers, "sets": {name: numbers}}`` and the plot.
    """
    if len(names) != len(sets):
        raise ValueError(f"{len(sets)} sets given for the {len(names)} names {names}")
    model, normalizer = expert_model(trajectory, backbone=backbone)
    generator = torch.Generator().manual_seed(config.seed)
    count = min(_REAL_PAIRS_SHOWN, train_images["images"].shape[0])
    chosen = torch.randperm(train_images["images"].shape[0], generator=generator)[:count]
    split = image_text_split(train_images, train_text_features)
    order, offsets, counts = split.captions_by_image()
    chosen = chosen[counts[chosen] > 0]
    real_image, real_text = embed_pairs(
        model, normalizer(split.images[chosen]), split.text[order[offsets[chosen]]]
    )
    mean, basis = pca_basis(torch.cat([real_image, real_text]))

    def plane(x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - mean) @ basis).float()

    numbers, panels = {}, []
    for name, small_set in zip(names, sets, strict=True):
        image, text = embed_pairs(model, small_set["images"].float(), small_set["texts"].float())
        numbers[name] = {k: round(v, 4) for k, v in modality_numbers(image, text).items()}
        panels.append((name, plane(image), plane(text), numbers[name]))
    real = {k: round(v, 4) for k, v in modality_numbers(real_image, real_text).items()}
    protocol = protocol_of(ModelRecipe.from_json(trajectory.metadata["model"]))
    panels.append(
        (f"real train pairs ({chosen.numel()})", plane(real_image), plane(real_text), real)
    )
    figure = modality_figure(
        panels,
        (plane(real_image), plane(real_text)),
        f"Image (o) and text (^) embeddings under expert {trajectory.metadata['expert_index']}'s "
        f"final parameters ({protocol}), PCA of the real pairs; real pairs faint behind",
    )
    for name, values in numbers.items():
        logger.info(
            "modality (%s): paired cosine %.3f, spread image %.3f / text %.3f (real pairs: "
            "%.3f, %.3f / %.3f)",
            name,
            values["paired_cosine"],
            values["image_spread"],
            values["text_spread"],
            real["paired_cosine"],
            real["image_spread"],
            real["text_spread"],
        )
    report = {
        "protocol": protocol,
        "model": f"expert {trajectory.metadata['expert_index']}, final parameters",
        "real_pairs": {"count": int(chosen.numel()), **real},
        "sets": numbers,
    }
    return report, figure


def diagnose_modality_gap_on_backbone(
    train_images: TensorBundle,
    train_text_features: TensorBundle,
    config: EvaluationParams,
    backbone: TensorBundle,
    trajectory: TensorBundle,
    *sets: TensorBundle,
    names: tuple[str, ...],
) -> tuple[dict[str, Any], Figure]:
    """:func:`diagnose_modality_gap` in the frozen-backbone protocol."""
    return diagnose_modality_gap(
        train_images,
        train_text_features,
        config,
        trajectory,
        *sets,
        names=names,
        backbone=backbone,
    )


def summarise_evaluation(
    *results: dict[str, Any],
) -> tuple[dict[str, float], str, pd.DataFrame, Figure]:
    """metrics.json, the comparison table (markdown + csv) and the bar chart.

    Two column sets: the last epoch (``<method>.<metric>.<stat>``) and, where evaluated, the
    epoch chosen on the validation split (``<method>.val_epoch.<metric>.<stat>``); both are
    scored on the test split. Modality diagnostics among ``results`` (those with ``sets``)
    add ``<set>.modality.<number>`` and their own table.
    """
    diagnostics = [r for r in results if "sets" in r]
    metrics, markdown, table, done = comparison([r for r in results if "sets" not in r])
    if diagnostics:
        metrics.update(modality_metrics(diagnostics))
        markdown += "\n" + modality_table(diagnostics)
    return metrics, markdown, table, recall_bars(done)


def archive_budget(
    metrics: dict[str, float],
    lors_evaluation: dict[str, Any],
    ingestion: IngestionParams,
    features: FeaturesParams,
    model: ModelParams,
    experts: ExpertsParams,
    evaluation: EvaluationParams,
) -> dict[str, dict[str, Any]]:
    """This run's entry of the per-budget archive: ``pairs_<N>_<setup>`` -> metrics, the setup
    hashed from the sections that make two budgets comparable.

    Each section is named and annotated: Kedro builds the typed object a node receives from its
    annotation, in the pipelines being run (``kedro run --pipelines evaluation`` included)."""
    return budget_entry(metrics, lors_evaluation, ingestion, features, model, experts, evaluation)


def plot_recall_vs_budget(
    budgets: dict[str, Callable[[], dict[str, Any]]],
    ingestion: IngestionParams,
    features: FeaturesParams,
    model: ModelParams,
    experts: ExpertsParams,
    evaluation: EvaluationParams,
) -> Figure:
    """Mean recall (± std over seeds) against the number of pairs, one line per method, from
    the budgets archived in ``data/08_reporting/budgets`` by runs with this run's setup (other
    data, experts or evaluation settings are left out), with the full-data bound."""
    setup = setup_id(ingestion, features, model, experts, evaluation)
    entries = sorted(
        (entry for load in budgets.values() if (entry := load()).get("setup") == setup),
        key=lambda e: e["num_pairs"],
    )
    return recall_vs_budget_figure(entries, (*METHODS, *CORESET_METHODS))

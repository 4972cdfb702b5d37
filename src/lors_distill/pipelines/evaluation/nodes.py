"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from lors_distill.core.artifacts import expert_model
from lors_distill.core.bundle import BundleIntegrityError, TensorBundle, load_bundle
from lors_distill.core.config import parse_section, to_dataclass
from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.data import Normalizer
from lors_distill.core.device import describe_machine, resolve_device
from lors_distill.core.distill import METHODS
from lors_distill.core.distilled import similarity_from_bundle
from lors_distill.core.evaluate import (
    EvalTrainingConfig,
    RetrievalSplit,
    SmallSet,
    evaluate_small_set,
)
from lors_distill.core.models import ConvNetConfig, ImageEncoderSpec, ModelRecipe
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.scorer import scorer_bundle
from lors_distill.core.seeding import derive_seed
from lors_distill.core.similarity import IdentitySimilarity

logger = logging.getLogger(__name__)

METRICS = ("ir@1", "ir@5", "ir@10", "tr@1", "tr@5", "tr@10", "mean_recall")
SELECTION = "last epoch (no model selection on the test split)"
VAL_SELECTION = "epoch with the best validation mean recall, scored on the test split"


def _mean_std(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    frame = pd.DataFrame(runs)[list(METRICS)]
    return {
        "mean": {k: round(float(v), 4) for k, v in frame.mean().items()},
        "std": {k: round(float(v), 4) for k, v in frame.std(ddof=0).items()},
    }


def summarise_runs(method: str, runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Mean and (population) std over runs, in percent, plus the runs themselves.

    Runs that carry ``val_selected`` (see :func:`lors_distill.core.evaluate.evaluate_small_set`)
    also give a ``val_selected`` summary: the same statistics at the validation-chosen epochs.
    """
    last = [{k: v for k, v in run.items() if k != "val_selected"} for run in runs]
    summary = {"method": method, **_mean_std(last), "runs": last, **extra}
    if runs and all("val_selected" in run for run in runs):
        chosen = [run["val_selected"] for run in runs]
        summary["val_selected"] = {
            **_mean_std(chosen),
            "epochs": [run["epoch"] for run in chosen],
            "runs": chosen,
            "selection": VAL_SELECTION,
        }
    return summary


@dataclass
class _Evaluation:
    """What every fresh model trained on one set shares (see :func:`evaluate_set`)."""

    recipe: ModelRecipe
    data: SmallSet
    normalizer: Normalizer
    training: EvalTrainingConfig
    seeds: list[int]
    device: torch.device
    targets: str


def _prepare(
    small_set: TensorBundle,
    config: Any,
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
                ConvNetConfig(**config.cross_arch.convnet.model_dump()),
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
        training=to_dataclass(EvalTrainingConfig, config),
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
    params: dict[str, Any],
    *,
    method: str,
    hard_targets: bool = False,
    cross_arch: bool = False,
    keep_model: bool = False,
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

    Returns:
        ``{"method", "mean", "std", "runs", "val_selected", ...}`` with Recall@K in percent
        (and the scorer bundle with ``keep_model``).
    """
    config = parse_section("evaluation", params)
    if cross_arch and config.cross_arch is None:
        return {"method": method, "skipped": "evaluation.cross_arch is not set"}
    setup = _prepare(small_set, config, hard_targets=hard_targets, cross_arch=cross_arch)
    runs, first_model = evaluate_small_set(
        setup.recipe.build,
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


def evaluate_external_set(
    test_images: TensorBundle,
    test_text_features: TensorBundle,
    val_images: TensorBundle,
    val_text_features: TensorBundle,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the set at ``evaluation.external_set`` (a run produced elsewhere), if set."""
    config = parse_section("evaluation", params)
    if not config.external_set:
        return {"method": "external", "skipped": "evaluation.external_set is not set"}
    path = Path(config.external_set)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation.external_set: {path} does not exist")
    try:
        external = load_bundle(path)
    except BundleIntegrityError as error:
        raise ValueError(f"evaluation.external_set: {error}") from error
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
        params,
        method="external",
    )
    return {**result, "path": str(path.resolve())}


def make_random_teacher_set(
    random_set: TensorBundle, params: dict[str, Any], *trajectories: TensorBundle
) -> TensorBundle:
    """The random coreset with soft targets from a trained expert (``random_teacher`` control).

    ``S_ij`` is the expert's cosine similarity between coreset image ``i`` and text ``j``,
    min-max scaled over the whole matrix to ``[0, 1]``, with the diagonal set to 1 (each image's
    own caption stays a full positive). This isolates what soft labels alone are worth.
    """
    config = parse_section("evaluation", params)
    model, _ = expert_model(trajectories[config.teacher_expert])
    model.eval()
    with torch.no_grad():
        cosine = model.encode_image(random_set["images"]) @ model.encode_text(random_set["texts"]).T
    scaled = (cosine - cosine.min()) / (cosine.max() - cosine.min()).clamp(min=1e-8)
    scaled.fill_diagonal_(1.0)
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
    evaluation_params: dict[str, Any],
    *trajectories: TensorBundle,
) -> dict[str, Any]:
    """The full-data upper bound: every expert after its last epoch, on the test split, scored
    on ``evaluation.device`` like every other set."""
    runs = []
    device = resolve_device(parse_section("evaluation", evaluation_params).device)
    for trajectory in trajectories:
        model, normalizer = expert_model(trajectory)
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
        "full_data", runs, selection="last expert epoch", machine=describe_machine(device)
    )


def report_order() -> tuple[str, ...]:
    """The rows of the comparison, in order (the coreset methods as registered, so a method
    registered after this module was imported is reported too)."""
    return (
        *METHODS,  # lors, tesla_vl, mtt_vl
        *CORESET_METHODS,  # random, herding, k_center, forgetting
        "lors_hard",
        "random_teacher",
        "lors_cross_arch",
        "external",
        "full_data",
    )


def _table_lines(rows: list[tuple[str, dict[str, Any], int]]) -> list[str]:
    header = "| method | IR@1 | IR@5 | IR@10 | TR@1 | TR@5 | TR@10 | mean | runs |"
    lines = [header, "|" + "---|" * 9]
    for method, stats, runs in rows:
        cells = [f"{stats['mean'][m]:.2f} ± {stats['std'][m]:.2f}" for m in METRICS]
        lines.append("| " + " | ".join([method, *cells, str(runs)]) + " |")
    return lines


def summarise_evaluation(
    *results: dict[str, Any],
) -> tuple[dict[str, float], str, pd.DataFrame, Figure]:
    """metrics.json, the comparison table (markdown + csv) and the bar chart.

    Two column sets: the last epoch (``<method>.<metric>.<stat>``) and, where evaluated, the
    epoch chosen on the validation split (``<method>.val_epoch.<metric>.<stat>``); both are
    scored on the test split.
    """
    done = sorted(
        (r for r in results if "skipped" not in r), key=lambda r: report_order().index(r["method"])
    )
    metrics = {
        f"{r['method']}.{metric}.{stat}": r[stat][metric]
        for r in done
        for metric in METRICS
        for stat in ("mean", "std")
    }
    selected = [r for r in done if "val_selected" in r]
    metrics.update(
        {
            f"{r['method']}.val_epoch.{metric}.{stat}": r["val_selected"][stat][metric]
            for r in selected
            for metric in METRICS
            for stat in ("mean", "std")
        }
    )
    rows = []
    for r in done:
        row = {"method": r["method"]}
        row.update({m: f"{r['mean'][m]:.2f} ± {r['std'][m]:.2f}" for m in METRICS})
        row["runs"] = len(r["runs"])
        if "val_selected" in r:
            chosen = r["val_selected"]
            row.update(
                {
                    f"val_epoch_{m}": f"{chosen['mean'][m]:.2f} ± {chosen['std'][m]:.2f}"
                    for m in METRICS
                }
            )
            row["val_epochs"] = " ".join(str(e) for e in chosen["epochs"])
        rows.append(row)
    table = pd.DataFrame(rows)
    pairs = {r["num_pairs"] for r in done if "num_pairs" in r}
    budget = ", ".join(str(p) for p in sorted(pairs))
    markdown = (
        f"Recall@K in percent on the test split, mean ± std over fresh models ({budget} pairs; "
        f"{SELECTION}; full_data: the experts themselves).\n\n"
        + "\n".join(_table_lines([(r["method"], r, len(r["runs"])) for r in done]))
        + "\n"
    )
    if selected:
        markdown += (
            f"\nThe same models at the {VAL_SELECTION} (chosen epochs per seed in "
            "comparison_table.csv, column val_epochs):\n\n"
            + "\n".join(
                _table_lines([(r["method"], r["val_selected"], len(r["runs"])) for r in selected])
            )
            + "\n"
        )
    machines = sorted({r["machine"] for r in done if "machine" in r})
    if machines:
        markdown += "\nComputed with " + "; ".join(machines) + ".\n"
    return metrics, markdown, table, _recall_bars(done)


def _recall_bars(done: list[dict[str, Any]]) -> Figure:
    figure = Figure(figsize=(9, 4))
    axis = figure.add_subplot()
    names = [r["method"] for r in done]
    positions = range(len(names))
    colours = [
        "tab:red" if n == "lors" else "tab:grey" if n == "full_data" else "tab:blue" for n in names
    ]
    width = 0.4
    axis.bar(
        [x - width / 2 for x in positions],
        [r["mean"]["mean_recall"] for r in done],
        width,
        yerr=[r["std"]["mean_recall"] for r in done],
        capsize=3,
        color=colours,
        label="last epoch",
    )
    chosen = [
        (x, r["val_selected"]) for x, r in zip(positions, done, strict=True) if "val_selected" in r
    ]
    if chosen:
        axis.bar(
            [x + width / 2 for x, _ in chosen],
            [c["mean"]["mean_recall"] for _, c in chosen],
            width,
            yerr=[c["std"]["mean_recall"] for _, c in chosen],
            capsize=3,
            color=[colours[x] for x, _ in chosen],
            alpha=0.45,
            hatch="//",
            label="epoch chosen on validation",
        )
        axis.legend(fontsize=8)
    axis.set_xticks(list(positions), names, rotation=30)
    axis.set_ylabel("mean of IR/TR Recall@1/5/10 (%)")
    axis.set_title(
        "Retrieval on the test split after training on each set (error bars: std over seeds)",
        fontsize=10,
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


# what makes budgets comparable: same data, text features, model, experts and evaluation
_SETUP_IGNORED = {"device", "num_workers", "external_set", "cross_arch"}


def setup_id(*sections: dict[str, Any]) -> str:
    """A short hash of the parameter sections that must match for two budgets to share a plot
    (the run-time-only keys such as ``device`` left out)."""
    cleaned = [{k: v for k, v in s.items() if k not in _SETUP_IGNORED} for s in sections]
    return hashlib.sha256(json.dumps(cleaned, sort_keys=True).encode()).hexdigest()[:8]


def archive_budget(
    metrics: dict[str, float], lors_evaluation: dict[str, Any], *sections: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """This run's entry of the per-budget archive: ``pairs_<N>_<setup>`` -> metrics."""
    num_pairs = int(lors_evaluation["num_pairs"])
    setup = setup_id(*sections)
    return {f"pairs_{num_pairs:05d}_{setup}": {"num_pairs": num_pairs, "setup": setup, **metrics}}


def plot_recall_vs_budget(
    budgets: dict[str, Callable[[], dict[str, Any]]], *sections: dict[str, Any]
) -> Figure:
    """Mean recall (± std over seeds) against the number of pairs, one line per method, from
    the budgets archived in ``data/08_reporting/budgets`` by runs with this run's setup (other
    data, experts or evaluation settings are left out), with the full-data bound."""
    setup = setup_id(*sections)
    entries = sorted(
        (entry for load in budgets.values() if (entry := load()).get("setup") == setup),
        key=lambda e: e["num_pairs"],
    )
    figure = Figure(figsize=(7, 4.5))
    axis = figure.add_subplot()
    for method in (*METHODS, *CORESET_METHODS):  # the methods compared across budgets
        points = [e for e in entries if f"{method}.mean_recall.mean" in e]
        if points:
            axis.errorbar(
                [e["num_pairs"] for e in points],
                [e[f"{method}.mean_recall.mean"] for e in points],
                yerr=[e[f"{method}.mean_recall.std"] for e in points],
                marker="o",
                capsize=3,
                label=method,
                linewidth=2.5 if method == "lors" else 1.2,
            )
    full = [e["full_data.mean_recall.mean"] for e in entries if "full_data.mean_recall.mean" in e]
    if full:
        axis.axhline(full[-1], color="grey", linestyle="--", label="full data (experts)")
    axis.set_xscale("log")
    axis.set_xlabel("pairs in the set (distillation.num_pairs)")
    axis.set_ylabel("mean of IR/TR Recall@1/5/10 (%)")
    title = "Retrieval vs budget (error bars: std over seeds)"
    if len(entries) < 2:
        title += "\none budget so far: rerun with --params distillation.num_pairs=<N> to add one"
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure

"""The comparison of evaluated sets: summaries over seeds, metrics.json, the tables, and the
per-budget archive's keys. Framework-free; the evaluation pipeline's nodes call it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distill import FROZEN_METHODS, METHODS

if TYPE_CHECKING:
    from lors_distill.core.schema import Strict

METRICS = ("ir@1", "ir@5", "ir@10", "tr@1", "tr@5", "tr@10", "mean_recall")
SELECTION = "last epoch (no model selection on the test split)"
VAL_SELECTION = "epoch with the best validation mean recall, scored on the test split"
# the training protocols (the table's protocol column): the image encoder trained, or a frozen
# backbone with a trained image head (RepBlend's); rows compare within a protocol
FINE_TUNE = "fine-tune"
FROZEN = "frozen backbone"


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


def frozen_coreset_rows() -> tuple[str, ...]:
    """The coresets' rows in the frozen-backbone protocol (``random_frozen``, ...)."""
    return tuple(f"{method}_frozen" for method in CORESET_METHODS)


def report_order() -> tuple[str, ...]:
    """The rows of the comparison, in order: the full fine-tuning protocol, then the
    frozen-backbone one (the coreset methods as registered, so a method registered after this
    module was imported is reported too)."""
    return (
        *METHODS,  # lors, lors_blend, tesla_vl, mtt_vl
        *CORESET_METHODS,  # random, herding, k_center, forgetting
        "lors_hard",
        "random_teacher",
        "lors_cross_arch",
        "external",
        "full_data",
        *FROZEN_METHODS,  # repblend, lors_frozen, tesla_vl_frozen
        *frozen_coreset_rows(),
        "full_data_frozen",
    )


def _table_lines(rows: list[tuple[dict[str, Any], dict[str, Any], int]]) -> list[str]:
    header = "| method | protocol | IR@1 | IR@5 | IR@10 | TR@1 | TR@5 | TR@10 | mean | runs |"
    lines = [header, "|" + "---|" * 10]
    for result, stats, runs in rows:
        cells = [f"{stats['mean'][m]:.2f} ± {stats['std'][m]:.2f}" for m in METRICS]
        names = [result["method"], result.get("protocol", FINE_TUNE)]
        lines.append("| " + " | ".join([*names, *cells, str(runs)]) + " |")
    return lines


def comparison(
    results: Sequence[dict[str, Any]],
) -> tuple[dict[str, float], str, pd.DataFrame, list[dict[str, Any]]]:
    """metrics.json, the comparison table (markdown + csv) and the evaluated results in report
    order (what the bar chart draws; skipped sets left out).

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
        row = {"method": r["method"], "protocol": r.get("protocol", FINE_TUNE)}
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
        f"{SELECTION}; full_data: the experts themselves). Protocol: {FINE_TUNE} (the image "
        f"encoder trained) or {FROZEN} (two heads trained on a fixed backbone); compare rows "
        "within one protocol.\n\n"
        + "\n".join(_table_lines([(r, r, len(r["runs"])) for r in done]))
        + "\n"
    )
    if selected:
        markdown += (
            f"\nThe same models at the {VAL_SELECTION} (chosen epochs per seed in "
            "comparison_table.csv, column val_epochs):\n\n"
            + "\n".join(_table_lines([(r, r["val_selected"], len(r["runs"])) for r in selected]))
            + "\n"
        )
    machines = sorted({r["machine"] for r in done if "machine" in r})
    if machines:
        markdown += "\nComputed with " + "; ".join(machines) + ".\n"
    return metrics, markdown, table, done


MODALITY_NUMBERS = ("paired_cosine", "image_spread", "text_spread")


def modality_metrics(diagnostics: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``<set>.modality.<number>`` of every set of the modality diagnostics (and
    ``real_pairs[_frozen].modality.<number>``, the real pairs measured alike)."""
    metrics = {}
    for report in diagnostics:
        suffix = "_frozen" if report["protocol"] == FROZEN else ""
        rows = {**report["sets"], f"real_pairs{suffix}": report["real_pairs"]}
        for name, values in rows.items():
            metrics.update({f"{name}.modality.{k}": values[k] for k in MODALITY_NUMBERS})
    return metrics


def modality_table(diagnostics: Sequence[dict[str, Any]]) -> str:
    """The modality diagnostic as a markdown table, one row per set and protocol."""
    lines = [
        "Modality gap (embeddings under the first expert's final parameters; paired cosine: "
        "mean cosine of each image with its own text; spread: mean distance between two "
        "embeddings of one modality; real pairs: train pairs measured alike):",
        "",
        "| set | protocol | paired cosine | image spread | text spread |",
        "|---|---|---|---|---|",
    ]
    for report in diagnostics:
        rows = {**report["sets"], "real pairs": report["real_pairs"]}
        for name, values in rows.items():
            cells = [f"{values[k]:.3f}" for k in MODALITY_NUMBERS]
            lines.append("| " + " | ".join([name, report["protocol"], *cells]) + " |")
    return "\n".join(lines) + "\n"


# what makes budgets comparable: same data, text features, model, experts and evaluation
_SETUP_IGNORED = {"device", "num_workers", "external_set", "cross_arch", "shards"}


def setup_id(*sections: Strict) -> str:
    """A short hash of the parameter sections that must match for two budgets to share a plot
    (the run-time-only keys such as ``device`` left out), from their validated values."""
    cleaned = [
        {k: v for k, v in s.model_dump(mode="json").items() if k not in _SETUP_IGNORED}
        for s in sections
    ]
    return hashlib.sha256(json.dumps(cleaned, sort_keys=True).encode()).hexdigest()[:8]


def budget_entry(
    metrics: dict[str, float], lors_evaluation: dict[str, Any], *sections: Strict
) -> dict[str, dict[str, Any]]:
    """This run's entry of the per-budget archive: ``pairs_<N>_<setup>`` -> metrics."""
    num_pairs = int(lors_evaluation["num_pairs"])
    setup = setup_id(*sections)
    return {f"pairs_{num_pairs:05d}_{setup}": {"num_pairs": num_pairs, "setup": setup, **metrics}}

"""Evaluation summary nodes: the per-budget archive and the recall-vs-budget plot."""

import pytest

from lors_distill.pipelines.evaluation.nodes import (
    METRICS,
    plot_recall_vs_budget,
    summarise_evaluation,
)


def _result(method, mean, std, num_pairs=None):
    out = {
        "method": method,
        "mean": dict.fromkeys(METRICS, mean),
        "std": dict.fromkeys(METRICS, std),
        "runs": [{}] * 3,
    }
    return out if num_pairs is None else {**out, "num_pairs": num_pairs}


def test_summary_archives_this_budget_under_its_size():
    results = [
        _result("random", 1.0, 0.1, 50),
        _result("lors", 2.0, 0.2, 50),
        _result("full_data", 5.0, 0.5),
        {"method": "external", "skipped": "evaluation.external_set is not set"},
    ]
    metrics, markdown, table, _, budget = summarise_evaluation(*results)
    assert list(budget) == ["pairs_00050"]
    assert budget["pairs_00050"] == {"num_pairs": 50, **metrics}
    assert table["method"].tolist() == ["lors", "random", "full_data"]  # table order
    assert "| lors | 2.00 ± 0.20 |" in markdown


def test_recall_vs_budget_plots_every_archived_budget_in_order():
    archive = {
        "pairs_00200": {"num_pairs": 200, "lors.mean_recall.mean": 3.0,
                        "lors.mean_recall.std": 0.3, "full_data.mean_recall.mean": 5.0},
        "pairs_00050": {"num_pairs": 50, "lors.mean_recall.mean": 1.0,
                        "lors.mean_recall.std": 0.1, "random.mean_recall.mean": 0.5,
                        "random.mean_recall.std": 0.05, "full_data.mean_recall.mean": 5.0},
    }  # fmt: skip
    figure = plot_recall_vs_budget({k: (lambda v=v: v) for k, v in archive.items()})
    axis = figure.axes[0]
    lines = {c.get_label(): c.lines[0] for c in axis.containers}  # one errorbar per method
    lines.update(
        {line.get_label(): line for line in axis.get_lines() if line.get_label()[0] != "_"}
    )
    assert list(lines["lors"].get_xdata()) == [50, 200]
    assert list(lines["lors"].get_ydata()) == pytest.approx([1.0, 3.0])
    assert list(lines["random"].get_xdata()) == [50]  # only where it was run
    assert list(lines["full data (experts)"].get_ydata()) == [5.0, 5.0]
    assert axis.get_xscale() == "log"
    assert "one budget so far" not in axis.get_title()
    single = plot_recall_vs_budget({"pairs_00050": lambda: archive["pairs_00050"]})
    assert "one budget so far" in single.axes[0].get_title()

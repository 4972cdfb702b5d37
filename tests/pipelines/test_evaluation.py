"""Evaluation summary nodes: the per-budget archive and the recall-vs-budget plot."""

from lors_distill.core.reports import METRICS, setup_id
from lors_distill.pipelines.evaluation.nodes import (
    archive_budget,
    plot_recall_vs_budget,
    summarise_evaluation,
)
from tests.params import section

SECTIONS = [
    section(name, env=None) for name in ("ingestion", "features", "model", "experts", "evaluation")
]


def _result(method, mean, std, num_pairs=None):
    out = {
        "method": method,
        "mean": dict.fromkeys(METRICS, mean),
        "std": dict.fromkeys(METRICS, std),
        "runs": [{}] * 3,
    }
    return out if num_pairs is None else {**out, "num_pairs": num_pairs}


def test_summary_table_and_budget_archive_entry():
    results = [
        _result("random", 1.0, 0.1, 50),
        _result("lors", 2.0, 0.2, 50),
        _result("full_data", 5.0, 0.5),
        {"method": "external", "skipped": "evaluation.external_set is not set"},
    ]
    metrics, markdown, table, _ = summarise_evaluation(*results)
    assert table["method"].tolist() == ["lors", "random", "full_data"]  # table order
    assert "| lors | fine-tune | 2.00 ± 0.20 |" in markdown
    assert metrics["lors.mean_recall.std"] == 0.2
    archive = archive_budget(metrics, results[1], *SECTIONS)
    setup = setup_id(*SECTIONS)
    assert archive == {f"pairs_00050_{setup}": {"num_pairs": 50, "setup": setup, **metrics}}


def test_setup_ignores_run_time_keys_but_not_the_data():
    other_device = [s.updated(device="cuda") if hasattr(s, "device") else s for s in SECTIONS]
    assert setup_id(*other_device) == setup_id(*SECTIONS)
    other_data = [SECTIONS[0].updated(image_size=64), *SECTIONS[1:]]
    assert setup_id(*other_data) != setup_id(*SECTIONS)


def _entry(num_pairs, setup, **values):
    return {"num_pairs": num_pairs, "setup": setup, **values}


def test_recall_vs_budget_plots_this_setups_budgets_in_order():
    setup = setup_id(*SECTIONS)
    archive = {
        "a": _entry(200, setup, **{"lors.mean_recall.mean": 3.0, "lors.mean_recall.std": 0.3,
                                   "full_data.mean_recall.mean": 5.0}),
        "b": _entry(50, setup, **{"lors.mean_recall.mean": 1.0, "lors.mean_recall.std": 0.1,
                                  "random.mean_recall.mean": 0.5, "random.mean_recall.std": 0.05,
                                  "full_data.mean_recall.mean": 5.0}),
        "c": _entry(100, "another", **{"lors.mean_recall.mean": 9.0, "lors.mean_recall.std": 0.0}),
    }  # fmt: skip
    figure = plot_recall_vs_budget({k: (lambda v=v: v) for k, v in archive.items()}, *SECTIONS)
    axis = figure.axes[0]
    lines = {c.get_label(): c.lines[0] for c in axis.containers}  # one errorbar per method
    lines.update(
        {line.get_label(): line for line in axis.get_lines() if line.get_label()[0] != "_"}
    )
    assert list(lines["lors"].get_xdata()) == [50, 200]  # the other setup's 100 is left out
    assert list(lines["lors"].get_ydata()) == [1.0, 3.0]
    assert list(lines["random"].get_xdata()) == [50]  # only where it was run
    assert list(lines["full data (experts)"].get_ydata()) == [5.0, 5.0]
    assert axis.get_xscale() == "log"
    assert "one budget so far" not in axis.get_title()
    single = plot_recall_vs_budget({"b": lambda: archive["b"]}, *SECTIONS)
    assert "one budget so far" in single.axes[0].get_title()


def test_validation_chosen_epochs_get_their_own_columns():
    lors = {
        **_result("lors", 2.0, 0.2, 50),
        "val_selected": {**_result("lors", 2.5, 0.1), "epochs": [40, 100, 60]},
    }
    metrics, markdown, table, figure = summarise_evaluation(lors, _result("full_data", 5.0, 0.5))
    assert metrics["lors.mean_recall.mean"] == 2.0  # the last epoch stays the headline
    assert metrics["lors.val_epoch.mean_recall.mean"] == 2.5
    assert "full_data.val_epoch.mean_recall.mean" not in metrics
    last, chosen = markdown.split("validation mean recall, scored on the test split")
    assert "| lors | fine-tune | 2.00 ± 0.20 |" in last
    assert "| lors | fine-tune | 2.50 ± 0.10 |" in chosen
    assert "full_data" not in chosen
    assert table.set_index("method").loc["lors", "val_epochs"] == "40 100 60"
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "last epoch",
        "epoch chosen on validation",
    ]


def test_an_external_set_that_is_not_a_distilled_set_names_the_file(tmp_path):
    """The catalog's ``external_set`` reads the file ``evaluation.external_set`` names: a
    missing or pickled file is refused by the dataset, a bundle that is no distilled set by
    the node, each naming the parameter and the file."""
    import pickle

    import pytest
    import torch
    from kedro.io import DatasetError

    from lors_distill.core.bundle import TensorBundle, save_bundle
    from lors_distill.datasets import ExternalSetDataset
    from lors_distill.pipelines.evaluation.nodes import evaluate_external_set

    assert ExternalSetDataset().load() is None  # not set: the node skips it
    pickled = tmp_path / "set.pkl"
    pickled.write_bytes(pickle.dumps({"images": [1, 2, 3]}))
    for path, fragment in [
        (pickled, r"set\.pkl: unreadable safetensors file"),
        (tmp_path / "missing.safetensors", r"missing\.safetensors does not exist"),
    ]:
        with pytest.raises(DatasetError, match=rf"evaluation\.external_set: .*{fragment}"):
            ExternalSetDataset(filepath=str(path)).load()
    trajectory = tmp_path / "trajectory.safetensors"
    save_bundle(TensorBundle({"trajectory": torch.zeros(3, 4)}, {"model": "{}"}), trajectory)
    loaded = ExternalSetDataset(filepath=str(trajectory)).load()
    params = section("evaluation", env=None, external_set=str(trajectory))
    fragment = r"trajectory\.safetensors is not a distilled set \(it lacks images, lrs"
    with pytest.raises(ValueError, match=rf"evaluation\.external_set: .*{fragment}"):
        evaluate_external_set(loaded, None, None, None, None, params)


def test_full_data_is_scored_on_the_evaluation_device(monkeypatch):
    """The experts' upper bound runs where every other set runs (it used to hard-code CPU)."""
    import torch

    from lors_distill.core.bundle import TensorBundle
    from lors_distill.core.flat import flatten_parameters
    from lors_distill.core.models import ModelRecipe
    from lors_distill.pipelines.evaluation import nodes

    recipe = ModelRecipe.convnet(8, 6, width=4, depth=1, norm="none", dropout=0.0)
    trajectory = TensorBundle(
        {
            "trajectory": flatten_parameters(recipe.build(seed=3))[None],
            "image_mean": torch.full((3,), 0.5),
            "image_std": torch.full((3,), 0.25),
        },
        {"model": recipe.to_json()},
    )
    generator = torch.Generator().manual_seed(0)
    images = TensorBundle(
        {"images": torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=generator)}
    )
    features = TensorBundle(
        {"embeddings": torch.randn(8, 6, generator=generator), "image_index": torch.arange(8) // 2}
    )
    asked = []
    monkeypatch.setattr(
        nodes, "resolve_device", lambda name: asked.append(name) or torch.device("cpu")
    )
    evaluation = section("evaluation", env=None, device="cuda:1")
    summary = nodes.evaluate_full_data(images, features, evaluation, trajectory, trajectory)
    assert asked == ["cuda:1"]
    assert summary["method"] == "full_data"
    assert len(summary["runs"]) == 2
    assert summary["runs"][0] == summary["runs"][1]  # the same expert twice: the same recalls

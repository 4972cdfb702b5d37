"""Registries are the one list of names: what a registration adds to the pipelines."""

from __future__ import annotations


def test_a_registered_coreset_method_becomes_a_set_and_an_evaluated_row(monkeypatch):
    """The registry is the one list of coreset methods: the baselines pipeline writes one set
    per entry, the evaluation pipeline evaluates it, and the report orders it."""
    from lors_distill.core import coresets
    from lors_distill.core.reports import report_order
    from lors_distill.pipelines.baselines.pipeline import create_pipeline as baselines
    from lors_distill.pipelines.evaluation.pipeline import create_pipeline as evaluation

    assert list(coresets.CORESET_METHODS) == ["random", "herding", "k_center", "forgetting"]
    monkeypatch.setitem(coresets.CORESET_METHODS, "first_n", lambda inputs, generator: None)
    (select,) = [
        n for n in baselines(num_experts=1).nodes if n.name == "select_first_n_coreset_node"
    ]
    assert select.outputs == ["first_n_set"]
    names = {n.name for n in evaluation(num_experts=1).nodes}
    assert "evaluate_first_n_node" in names
    assert report_order().index("first_n") == report_order().index("forgetting") + 1

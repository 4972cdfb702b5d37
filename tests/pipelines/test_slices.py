"""Every pipeline as a slice: its nodes run by Kedro's ``SequentialRunner`` on a ``DataCatalog``
of in-memory datasets, the inputs coming from the slice before it (ingestion -> features ->
experts -> distillation -> baselines -> evaluation). No session, no hooks, no files but the
documented exceptions (resume checkpoints; the per-budget archive, a partitioned dataset). The
parameters are the ``test`` environment's typed objects, as Kedro's typed parameters put them in
a session's catalog, with a few sizes shrunk further.

Whole ``kedro run`` sessions (tests/pipelines/test_end_to_end.py and the per-pipeline tests) keep
what only a session has: the catalog's files, the hooks, MLflow, resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.partitions import PartitionedDataset
from matplotlib.figure import Figure

from lors_distill.core.config import validate_parameters
from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distilled import similarity_from_bundle
from lors_distill.datasets import ExternalSetDataset
from lors_distill.pipeline_registry import register_pipelines
from lors_distill.pipelines.distillation.nodes import distill
from tests.params import base_params

NUM_EXPERTS = 2


class Kept(MemoryDataset):
    """An in-memory dataset the runner does not release after its last consumer (the slices'
    outputs are inspected, and fed to the next slice)."""

    def _release(self) -> None:
        pass


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict[str, Any]:
    """The ``test`` environment's validated sections, smaller still where only the wiring is
    under test, with checkpoints in a temporary folder."""
    raw = base_params("test")
    raw["distillation"].update(
        iterations=4, checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints"))
    )
    raw["evaluation"].update(num_eval=1, epochs=2, lr_decay_epoch=1, select_every=1)
    assert raw["experts"]["num_experts"] == NUM_EXPERTS
    return validate_parameters(raw)


def run_slice(
    pipeline: Pipeline, data: dict[str, Any], parsed: dict[str, Any], **datasets: Any
) -> dict[str, Any]:
    """Run ``pipeline`` on in-memory ``data`` (and ``datasets``, name -> dataset object) with
    the typed parameters it asks for; returns every dataset the catalog then holds."""
    params = {
        name: parsed[name.removeprefix("params:")]
        for name in pipeline.inputs()
        if name.startswith("params:")
    }
    needed = pipeline.inputs() - set(params) - set(datasets)
    catalog = DataCatalog(
        {
            **{name: MemoryDataset(data[name], copy_mode="assign") for name in needed},
            **{name: MemoryDataset(value, copy_mode="assign") for name, value in params.items()},
            **{name: Kept(copy_mode="assign") for name in pipeline.all_outputs()},
            **datasets,
        }
    )
    SequentialRunner().run(pipeline, catalog)
    return {**data, **{name: catalog.load(name) for name in pipeline.all_outputs()}}


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Pipeline]:
    return register_pipelines(NUM_EXPERTS, 1, frozen_protocol=True)


@pytest.fixture(scope="module")
def ingested(pipelines, parsed) -> dict[str, Any]:
    return run_slice(pipelines["ingestion"], {}, parsed)


@pytest.fixture(scope="module")
def featurised(pipelines, parsed, ingested) -> dict[str, Any]:
    return run_slice(pipelines["features"], ingested, parsed)


@pytest.fixture(scope="module")
def trained(pipelines, parsed, featurised) -> dict[str, Any]:
    return run_slice(pipelines["experts"], featurised, parsed)


@pytest.fixture(scope="module")
def distilled(pipelines, parsed, trained) -> dict[str, Any]:
    return run_slice(pipelines["distillation"], trained, parsed)


@pytest.fixture(scope="module")
def baselines(pipelines, parsed, distilled) -> dict[str, Any]:
    return run_slice(pipelines["baselines"], distilled, parsed)


def test_ingestion_slice(ingested, parsed):
    scenes = parsed["ingestion"].scenes
    size = parsed["ingestion"].image_size
    for split, count in (("train", scenes.train_images), ("val", scenes.val_images)):
        bundle = ingested[f"{split}_images"]
        assert bundle["images"].shape == (count, 3, size, size)
        assert bundle["images"].dtype == torch.uint8
        assert bundle.metadata["split"] == split
    captions = ingested["captions"]
    assert len(captions) == scenes.captions_per_image * (
        scenes.train_images + scenes.val_images + scenes.test_images
    )
    assert ingested["ingestion_report"]["bad_records"]["total"] == 0


def test_features_slice(featurised):
    captions = featurised["captions"]
    for split in ("train", "val", "test"):
        features = featurised[f"{split}_text_features"]
        rows = captions[captions["split"] == split]
        assert features["embeddings"].shape == (len(rows), 384)
        assert features["image_index"].tolist() == rows["image_index"].tolist()


def test_experts_slice(trained, parsed):
    epochs = parsed["experts"].epochs
    first = trained["expert_0.trajectory"]
    assert first["trajectory"].shape[0] == epochs + 1
    assert not torch.equal(first["trajectory"], trained["expert_1.trajectory"]["trajectory"])
    assert trained["experts_summary"]["num_experts"] == NUM_EXPERTS
    assert len(trained["experts_loss_history"]) == NUM_EXPERTS * epochs
    assert isinstance(trained["experts_loss_plot"], Figure)


def test_distillation_slice(distilled, parsed):
    config = parsed["distillation"]
    bundle = distilled["distilled_set"]
    assert bundle["images"].shape == (config.num_pairs, 3, 16, 16)
    assert bundle.metadata["method"] == "lors"
    assert len(distilled["distillation_history"]) == config.iterations
    assert distilled["distilled_set_metadata"]["config"] == config.model_dump(mode="json")
    assert all(
        isinstance(distilled[name], Figure)
        for name in ("distilled_pairs_plot", "similarity_plot", "distillation_curves_plot")
    )


@pytest.mark.parametrize("sim_type", ["full", "identity"])
def test_other_similarities(trained, parsed, sim_type):
    """The distillation node with ``distillation.sim_type`` changed: ``identity`` keeps
    ``S = I`` (and stores no similarity tensor), ``full`` learns an N x N matrix."""
    config = parsed["distillation"].updated(sim_type=sim_type)
    trajectories = [trained[f"expert_{i}.trajectory"] for i in range(NUM_EXPERTS)]
    bundle, _, _ = distill(
        trained["train_images"], trained["train_text_features"], config, *trajectories
    )
    n = config.num_pairs
    matrix = similarity_from_bundle(bundle).matrix()
    if sim_type == "identity":
        assert bundle.metadata["method"] == "lors"  # the lors node, configured so
        assert torch.equal(matrix, torch.eye(n))
        assert not any(name.startswith("similarity.") for name in bundle.tensors)
    else:
        assert bundle["similarity.weight"].shape == (n, n)
        assert (matrix - torch.eye(n)).abs().max() > 1e-3


def test_baselines_slice(baselines, parsed):
    n = parsed["distillation"].num_pairs
    for method in CORESET_METHODS:
        coreset = baselines[f"{method}_set"]
        assert coreset["images"].shape[0] == n
        assert coreset.metadata["sim_type"] == "identity"
        assert len(set(coreset.metadata["train_image_indices"])) == n
    for method in ("tesla_vl", "mtt_vl"):
        bundle = baselines[f"{method}.distilled_set"]
        assert bundle.metadata["method"] == method
        assert torch.equal(similarity_from_bundle(bundle).matrix(), torch.eye(n))


@pytest.fixture(scope="module")
def frozen(pipelines, parsed, baselines) -> dict[str, Any]:
    return run_slice(pipelines["frozen"], baselines, parsed)


def test_frozen_slice(frozen, parsed):
    backbone = frozen["frozen.backbone"]
    assert frozen["frozen.backbone_report"]["source"] == "train"
    assert len(frozen["frozen.backbone_report"]["train_loss"]) == parsed["frozen"].backbone_epochs
    for index in range(NUM_EXPERTS):
        trajectory = frozen[f"frozen.expert_{index}.trajectory"]
        recipe = trajectory.metadata["model"]
        assert recipe["frozen_backbone"]
        assert recipe["backbone"] == backbone.sha256()[:16]
        names = trajectory.metadata["layout"]["names"]
        assert {name.split(".")[0] for name in names} == {"image_head", "text_head"}
        assert trajectory.metadata["provenance"]["inputs"]["backbone"] == backbone.sha256()
    for row in ("repblend", "lors_frozen", "tesla_vl_frozen"):
        bundle = frozen[f"{row}.distilled_set"]
        assert bundle.metadata["method"] == row
        assert bundle.metadata["model"]["frozen_backbone"]
        assert bundle.metadata["config"]["blend"]["enabled"] == (row == "repblend")
    for method in CORESET_METHODS:
        coreset = frozen[f"{method}_frozen_set"]
        assert coreset.metadata["method"] == f"{method}_frozen"
        assert coreset.metadata["model"]["frozen_backbone"]


def test_evaluation_slice(pipelines, parsed, frozen, tmp_path: Path):
    budgets = PartitionedDataset(
        path=str(tmp_path / "budgets"), dataset="json.JSONDataset", filename_suffix=".json"
    )
    external = ExternalSetDataset()  # evaluation.external_set not set
    out = run_slice(
        pipelines["evaluation"], frozen, parsed, budget_metrics=budgets, external_set=external
    )
    metrics = out["metrics"]
    rows = ("lors", "lors_blend", "tesla_vl", "mtt_vl", *CORESET_METHODS, "full_data")
    frozen_rows = ("repblend", "lors_frozen", "tesla_vl_frozen", "full_data_frozen")
    for method in rows + frozen_rows + tuple(f"{m}_frozen" for m in CORESET_METHODS):
        assert f"{method}.mean_recall.mean" in metrics, method
    for name in ("lors", "lors_blend", "random", "real_pairs", "repblend", "real_pairs_frozen"):
        for number in ("paired_cosine", "image_spread", "text_spread"):
            assert f"{name}.modality.{number}" in metrics, (name, number)
    assert (
        metrics["lors.modality.paired_cosine"]
        == out["modality_gap"]["sets"]["lors"]["paired_cosine"]
    )
    assert "| repblend | frozen backbone |" in out["comparison_table_md"]
    assert "| lors | fine-tune |" in out["comparison_table_md"]
    assert "Modality gap" in out["comparison_table_md"]
    for method in CORESET_METHODS:
        assert out[f"{method}_frozen_evaluation"]["protocol"] == "frozen backbone"
    gap = out["frozen.modality_gap"]
    assert set(gap["sets"]) == {"repblend", "lors_frozen", "tesla_vl_frozen", "random_frozen"}
    assert gap["protocol"] == "frozen backbone"
    assert out["modality_gap"]["protocol"] == "fine-tune"
    assert out["external_evaluation"]["skipped"] == "evaluation.external_set is not set"
    (entry,) = budgets.load().values()
    assert entry()["num_pairs"] == parsed["distillation"].num_pairs
    assert isinstance(out["recall_vs_budget_plot"], Figure)


def test_every_parameter_input_is_typed_by_its_own_node(pipelines):
    """Kedro builds a node's typed parameter object from the node's own annotation, in the
    pipelines being run: each node must annotate each ``params:`` input it takes with that
    section's class (else ``kedro run --pipelines <one>`` would hand it a plain dict)."""
    from kedro.validation.type_extractor import TypeExtractor

    from lors_distill.core.config import SECTIONS

    for node in pipelines["__default__"].nodes:
        wanted = {name.removeprefix("params:") for name in node.inputs if "params:" in name}
        typed = TypeExtractor({"one": Pipeline([node])}).extract_types_from_pipelines()
        assert typed == {name: SECTIONS[name] for name in wanted}, node.name

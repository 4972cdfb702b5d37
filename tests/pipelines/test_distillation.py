import json

import pandas as pd
import pytest
import torch

from lors_distill.core.bundle import load_bundle
from lors_distill.core.data import Normalizer
from lors_distill.core.distilled import from_bundle, similarity_from_bundle, to_bundle
from lors_distill.pipelines.distillation.nodes import distill_baseline
from tests.kedro_helpers import make_project_copy, run_kedro
from tests.params import section

DISTILLED = "data/07_model_output/distilled_set.safetensors"
HISTORY = "data/08_reporting/distillation_history.csv"


@pytest.fixture(scope="module")
def experts_project(tmp_path_factory):
    """A test-env project with ingestion, features and experts done once for this module."""
    project = make_project_copy(tmp_path_factory.mktemp("distillation"))
    run_kedro(project, ["ingestion", "features", "experts"])
    return project


def test_lowrank_distillation_lowers_the_loss_and_learns_s(experts_project):
    project = experts_project
    run_kedro(project, ["distillation"])
    history = pd.read_csv(project / HISTORY)
    assert len(history) == 12  # test env: 12 iterations
    assert history["loss"].tail(4).mean() < 0.85 * history["loss"].head(4).mean()
    distilled = load_bundle(project / DISTILLED)
    assert distilled.metadata["method"] == "lors"
    assert distilled["images"].shape == (12, 3, 16, 16)
    assert distilled["texts"].shape == (12, 384)
    matrix = similarity_from_bundle(distilled).matrix()
    assert (matrix - torch.eye(12)).abs().max() > 1e-3  # S moved away from I
    assert (distilled["lrs"] > 0).all()
    # outputs load back identically: bundle -> synthetic set -> bundle
    again = to_bundle(from_bundle(distilled), {})
    for name, tensor in distilled.tensors.items():
        assert torch.equal(again[name], tensor), name
    summary = json.loads((project / "data/07_model_output/distilled_set.json").read_text())
    assert summary["learned_lrs"] == pytest.approx(distilled["lrs"].tolist())
    assert summary["tensors"]["similarity.left"] == [12, 3]
    for plot in ("distilled_pairs", "similarity", "distillation_curves"):
        assert (project / f"data/08_reporting/{plot}.png").read_bytes()[:4] == b"\x89PNG"

    # a rerun resumes from the final checkpoint: no new iteration, the same set
    before = (project / DISTILLED).read_bytes()
    run_kedro(project, ["distillation"])
    assert (project / DISTILLED).read_bytes() == before
    assert len(pd.read_csv(project / HISTORY)) == 12


def test_inner_temperature_stays_out_of_the_evaluation_recipe(experts_project):
    """COCO 500's tau 0.1 changes the inner loop only: the set is evaluated at the experts' 0.07
    like every other set (as in the reference)."""
    project = experts_project
    run_kedro(project, ["distillation"], params={"distillation": {"temperature": 0.1}})
    distilled = load_bundle(project / DISTILLED)
    assert distilled.metadata["config"]["temperature"] == 0.1
    assert distilled.metadata["model"]["temperature"] == pytest.approx(0.07)


def test_a_baseline_takes_its_own_settings(experts_project):
    """The node on in-memory bundles: ``baselines.tesla_vl.lr_images: 0`` freezes TESLA-VL's
    images at their real initialisation while its texts still move at ``distillation``'s rate;
    its own ``expert_epochs`` is the one it matches."""
    project = experts_project
    data = project / "data"
    train_images = load_bundle(data / "02_intermediate/train_images.safetensors")
    features = load_bundle(data / "04_feature/train_text_features.safetensors")
    trajectories = [
        load_bundle(path)
        for path in sorted((data / "06_models/experts").glob("expert_*.safetensors"))
    ]
    params = section("distillation", checkpoint_dir=str(project / "checkpoints"), expert_epochs=1)
    own = section("baselines", tesla_vl={"lr_images": 0.0, "expert_epochs": 2})
    distilled, summary, _ = distill_baseline(
        train_images,
        features,
        params,
        own,
        *trajectories,
        method="tesla_vl",
    )
    assert summary["config"]["expert_epochs"] == 2
    assert summary["config"]["lr_images"] == 0.0
    assert summary["config"]["lr_texts"] == params.lr_texts
    assert summary["config"]["sim_type"] == "identity"
    normalizer = Normalizer(tuple(summary["image_mean"]), tuple(summary["image_std"]))
    chosen = torch.tensor(summary["init_images"])
    assert torch.equal(distilled["images"], normalizer(train_images["images"][chosen]))
    initial_texts = features["embeddings"].float()
    assert not any(
        (initial_texts == row).all(dim=1).any() for row in distilled["texts"]
    )  # every text vector moved
    # without overrides the same node follows distillation's rates: the images move
    moved, _, _ = distill_baseline(
        train_images,
        features,
        params,
        section("baselines", tesla_vl={}),
        *trajectories,
        method="tesla_vl",
    )
    assert not torch.equal(moved["images"], distilled["images"])


def test_the_nodes_that_draw_pairs_check_num_pairs_themselves():
    """Under the Dask runner no hook sees ingestion's outputs, so the distillation and the
    coreset nodes stop with RunChecksHook's message before drawing the pairs."""
    from lors_distill.core.bundle import TensorBundle
    from lors_distill.core.config import ParameterError
    from lors_distill.pipelines.baselines.nodes import select_coreset
    from lors_distill.pipelines.distillation.nodes import distill

    train = TensorBundle({"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8)}, {})
    too_many = section("distillation", num_pairs=10)
    message = r"distillation.num_pairs \(10\) exceeds the 4 train images"
    with pytest.raises(ParameterError, match=message):
        distill(train, None, too_many)
    with pytest.raises(ParameterError, match=message):
        select_coreset(train, None, too_many, section("baselines"), method="random")

import json

import pandas as pd
import pytest
import torch

from lors_distill.core.bundle import load_bundle
from lors_distill.core.config import ParameterError
from lors_distill.core.flat import ParameterLayout
from lors_distill.core.models import ModelRecipe
from lors_distill.provenance import StaleExpertError
from tests.kedro_helpers import run_kedro

EXPERTS = "data/06_models/experts"


def trajectory_bytes(project, index):
    return (project / EXPERTS / f"expert_{index}.safetensors").read_bytes()


@pytest.fixture
def prepared(project_copy):
    run_kedro(project_copy, ["ingestion", "features"])
    return project_copy


def test_experts_pipeline_outputs_and_resume(prepared):
    project = prepared
    run_kedro(project, ["experts"])
    bundle = load_bundle(project / EXPERTS / "expert_0.safetensors")
    meta = bundle.metadata
    layout = ParameterLayout.from_json(meta["layout"])
    model = ModelRecipe.from_json(meta["model"]).build(meta["seed"])
    assert layout == ParameterLayout.of(model)
    assert bundle["trajectory"].shape == (3 + 1, layout.size)  # test env: 3 epochs
    assert bundle["trajectory"].dtype == torch.float32
    assert bundle["train_loss"].shape == (3,)
    assert meta["model"]["convnet"] == {"width": 8, "depth": 2, "norm": "instancenorm"}
    assert set(meta["val_recall"]) >= {"tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10"}
    other = load_bundle(project / EXPERTS / "expert_1.safetensors")
    assert other.metadata["seed"] != meta["seed"]
    assert not torch.equal(other["trajectory"][0], bundle["trajectory"][0])

    summary = json.loads((project / "data/08_reporting/experts_summary.json").read_text())
    assert summary["num_experts"] == 2
    assert [e["expert_index"] for e in summary["experts"]] == [0, 1]
    history = pd.read_csv(project / "data/08_reporting/experts_loss_history.csv")
    assert len(history) == 2 * 3
    assert (project / "data/08_reporting/experts_loss.png").read_bytes()[:4] == b"\x89PNG"

    # an interrupted run: expert 1 was never written. Resuming trains exactly that one.
    first, second = trajectory_bytes(project, 0), trajectory_bytes(project, 1)
    stamp = (project / EXPERTS / "expert_0.safetensors").stat().st_mtime_ns
    (project / EXPERTS / "expert_1.safetensors").unlink()
    (project / "data/08_reporting/experts/expert_1.json").unlink()
    run_kedro(project, ["experts"], only_missing_outputs=True)
    assert (project / EXPERTS / "expert_0.safetensors").stat().st_mtime_ns == stamp
    assert trajectory_bytes(project, 0) == first
    assert trajectory_bytes(project, 1) == second  # same seed, same trajectory

    # more experts by parameter: one more node, the first two untouched
    run_kedro(
        project, ["experts"], params={"experts": {"num_experts": 3}}, only_missing_outputs=True
    )
    assert trajectory_bytes(project, 0) == first
    assert (project / EXPERTS / "expert_2.safetensors").is_file()
    # ... and the summary, downstream of the new expert, describes the 3 experts on disk
    summary = json.loads((project / "data/08_reporting/experts_summary.json").read_text())
    assert summary["num_experts"] == 3
    assert len(pd.read_csv(project / "data/08_reporting/experts_loss_history.csv")) == 3 * 3

    # reusing experts trained with other settings stops before any node, naming expert and key
    with pytest.raises(StaleExpertError) as info:
        run_kedro(
            project,
            ["experts"],
            params={"experts": {"num_experts": 4, "epochs": 5}},
            only_missing_outputs=True,
        )
    for index in range(3):
        assert f"expert_{index}.trajectory: trained with experts.epochs: 3 -> 5" in str(info.value)
    assert not (project / EXPERTS / "expert_3.safetensors").exists()
    # reading them as they are (no expert node in the run) is checked too, data included
    with pytest.raises(StaleExpertError, match=r"expert_0\.trajectory: trained with model\.temp"):
        run_kedro(project, ["distillation"], params={"model": {"temperature": 0.05}})
    run_kedro(project, ["ingestion"], params={"ingestion": {"seed": 7}})
    with pytest.raises(StaleExpertError, match=r"expert_1\.trajectory: trained on another train_"):
        run_kedro(project, ["distillation"], params={"ingestion": {"seed": 7}})


def test_frozen_experts_are_checked_against_their_settings_and_backbone(prepared):
    """Frozen-backbone experts reused by a run must match its frozen settings and backbone."""
    project, on = prepared, {"frozen": {"enabled": True}}
    run_kedro(project, ["frozen"], params=on)
    frozen = load_bundle(project / "data/06_models/frozen/experts/expert_0.safetensors")
    assert frozen.metadata["model"]["frozen_backbone"]
    distill = {"node_names": ["repblend.distill_node"]}
    with pytest.raises(
        StaleExpertError,
        match=r"frozen\.expert_0\.trajectory: trained with "
        r"frozen\.cache_features: True -> False",
    ):
        run_kedro(project, params={"frozen": {"enabled": True, "cache_features": False}}, **distill)
    # another backbone (retrained with another seed) under the reused frozen experts
    run_kedro(
        project, params={"frozen": {"enabled": True, "seed": 5}}, node_names=["make_backbone_node"]
    )
    with pytest.raises(
        StaleExpertError,
        match=r"frozen\.expert_1\.trajectory: trained on "
        r"another backbone",
    ):
        run_kedro(project, params=on, **distill)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"model": {"image_encoder": "resnet"}}, "model.image_encoder"),
        ({"experts": {"num_experts": 0}}, "experts.num_experts"),
        ({"experts": {"lr_image": -0.1}}, "experts.lr_image"),
        ({"experts": {"augment": {"crop_scale": [0.9, 0.2]}}}, "experts.augment.crop_scale"),
    ],
)
def test_bad_parameters_fail_before_any_node(project_copy, params, fragment):
    with pytest.raises(ParameterError, match=fragment.replace(".", r"\.")):
        run_kedro(project_copy, ["experts"], params=params)
    assert not (project_copy / EXPERTS).exists()

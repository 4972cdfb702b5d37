"""The whole ``__default__`` pipeline in the ``test`` environment, end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from lors_distill.core.bundle import load_bundle
from lors_distill.core.data import Normalizer
from lors_distill.core.distilled import similarity_from_bundle
from lors_distill.core.retrieval import recall_at_k
from lors_distill.core.seeding import derive_seed
from tests.kedro_helpers import make_project_copy, run_kedro
from tests.processes import background
from tests.processes import run as run_command

METHODS = [
    "lors",
    "lors_blend",
    "tesla_vl",
    "mtt_vl",
    "random",
    "herding",
    "k_center",
    "forgetting",
    "full_data",
]
CONTROLS = ["lors_hard", "random_teacher"]
# the frozen-backbone protocol's rows (RepBlend's), which frozen.enabled adds to the run
FROZEN_ROWS = [
    "repblend",
    "lors_frozen",
    "tesla_vl_frozen",
    "random_frozen",
    "herding_frozen",
    "k_center_frozen",
    "forgetting_frozen",
    "full_data_frozen",
]
FROZEN_ON = {"frozen": {"enabled": True}}
MODALITY_SETS = ["lors", "lors_blend", "tesla_vl", "mtt_vl", "random", "real_pairs"]
MODALITY_SETS += [
    "repblend",
    "lors_frozen",
    "tesla_vl_frozen",
    "random_frozen",
    "real_pairs_frozen",
]
METRICS = ["ir@1", "ir@5", "ir@10", "tr@1", "tr@5", "tr@10", "mean_recall"]


# what a run writes that must not depend on anything but the configuration and the machine
# (not plots, logs or the MLflow store; not resume checkpoints)
COMPARED = {".safetensors", ".json", ".csv", ".parquet", ".md"}
FIRST_RUN: dict[Path, dict[Path, bytes]] = {}  # the outputs as the fixture's run left them


def _without_timings(value):
    """A JSON value with the measured throughput (``*per_second*``, a wall-clock figure) left
    out: the only thing in these files that is not a function of the configuration."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "per_second" not in k}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _outputs(project: Path) -> dict[Path, bytes]:
    outputs = {}
    for path in (project / "data").rglob("*"):
        if path.suffix in COMPARED and "distillation_checkpoints" not in path.parts:
            content = path.read_bytes()
            if path.suffix == ".json":
                content = json.dumps(_without_timings(json.loads(content))).encode()
            outputs[path.relative_to(project)] = content
    return outputs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("e2e"))
    run_kedro(project, params=FROZEN_ON)  # __default__ with the frozen-backbone protocol
    FIRST_RUN[project] = _outputs(project)  # before any test reruns part of it
    return project


@pytest.mark.slow
def test_metrics_json_keys_and_values(finished):
    metrics = json.loads((finished / "data/08_reporting/metrics.json").read_text())
    stats = ("mean", "std")
    rows = METHODS + CONTROLS + FROZEN_ROWS
    expected = {f"{m}.{k}.{s}" for m in rows for k in METRICS for s in stats}
    # the same at the epoch chosen on the validation split (not for the experts: full_data)
    trained = [m for m in rows if not m.startswith("full_data")]
    expected |= {f"{m}.val_epoch.{k}.{s}" for m in trained for k in METRICS for s in stats}
    modality = {"paired_cosine", "image_spread", "text_spread"}
    gap = {f"{m}.modality.{n}" for m in MODALITY_SETS for n in modality}
    assert set(metrics) == expected | gap  # cross-arch and external are off by default
    recalls = {k: v for k, v in metrics.items() if ".modality." not in k}
    assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in recalls.values())
    # cosines in [-1, 1], distances between unit vectors in [0, 2]
    assert all(-1.0 <= metrics[k] <= 1.0 for k in gap if k.endswith("paired_cosine"))
    assert all(0.0 < metrics[k] <= 2.0 for k in gap if k.endswith("spread"))
    report_gap = json.loads((finished / "data/08_reporting/frozen/modality_gap.json").read_text())
    assert (
        metrics["repblend.modality.paired_cosine"]
        == report_gap["sets"]["repblend"]["paired_cosine"]
    )
    for method in rows:
        recalls = [metrics[f"{method}.{k}.mean"] for k in METRICS[:-1]]
        assert metrics[f"{method}.mean_recall.mean"] == pytest.approx(sum(recalls) / 6, abs=1e-3)
        assert metrics[f"{method}.ir@1.mean"] <= metrics[f"{method}.ir@10.mean"]
    report = json.loads((finished / "data/08_reporting/evaluation/lors.json").read_text())
    assert len(report["runs"]) == 2  # test env: num_eval 2
    assert report["selection"].startswith("last epoch")
    chosen = report["val_selected"]
    assert len(chosen["epochs"]) == 2
    assert set(chosen["epochs"]) <= {2, 4, 6}  # test env: select_every 2 of 6 epochs
    for run, at_epoch in zip(report["runs"], chosen["runs"], strict=True):
        if at_epoch["epoch"] == 6:  # the last epoch chosen: the same numbers
            assert {k: at_epoch[k] for k in METRICS} == {k: run[k] for k in METRICS}
    table = pd.read_csv(finished / "data/08_reporting/comparison_table.csv")
    assert table["method"].tolist() == [
        "lors",
        "lors_blend",
        "tesla_vl",
        "mtt_vl",
        "random",
        "herding",
        "k_center",
        "forgetting",
        "lors_hard",
        "random_teacher",
        "full_data",
        *FROZEN_ROWS,
    ]
    assert table["protocol"].tolist() == ["fine-tune"] * 11 + ["frozen backbone"] * 8
    markdown = (finished / "data/08_reporting/comparison_table.md").read_text()
    assert "| lors | fine-tune |" in markdown
    assert "| repblend | frozen backbone |" in markdown
    assert "last epoch" in markdown
    # the machine the numbers came from (CPU results depend on its kernels and thread count)
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"Computed with torch {torch.__version__}, " in markdown
    assert f"CPU ({capability}), {torch.get_num_threads()} threads." in markdown
    assert report["machine"].endswith(f"CPU ({capability}), {torch.get_num_threads()} threads")
    assert (finished / "data/08_reporting/recall_bar.png").read_bytes()[:4] == b"\x89PNG"
    (archive,) = (finished / "data/08_reporting/budgets").glob("pairs_00012_*.json")
    archived = json.loads(archive.read_text())
    assert archived == {"num_pairs": 12, "setup": archive.stem.split("_")[-1], **metrics}
    assert (finished / "data/08_reporting/recall_vs_budget.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_mlflow_run_has_params_histories_metrics_and_artifacts(finished):
    client = MlflowClient(tracking_uri=f"sqlite:///{finished / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lors_distill")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.info.run_name == "__default__"
    ]
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["distillation.num_pairs"] == "12"
    assert run.data.params["experts.num_experts"] == "2"
    history = client.get_metric_history(run.info.run_id, "distillation.loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 13))
    csv = pd.read_csv(finished / "data/08_reporting/distillation_history.csv")
    by_step = {m.step: m.value for m in history}
    assert by_step[12] == pytest.approx(csv["loss"].iloc[-1])
    assert len(client.get_metric_history(run.info.run_id, "experts.expert_1.train_loss")) == 3
    metrics = json.loads((finished / "data/08_reporting/metrics.json").read_text())
    assert run.data.metrics["lors.mean_recall.mean"] == pytest.approx(
        metrics["lors.mean_recall.mean"]
    )
    assert run.data.metrics["random.ir_at_1.mean"] == pytest.approx(metrics["random.ir@1.mean"])
    for row in ("repblend", "lors_frozen", "lors_blend"):
        assert run.data.metrics[f"{row}.mean_recall.mean"] == pytest.approx(
            metrics[f"{row}.mean_recall.mean"]
        )
    assert len(client.get_metric_history(run.info.run_id, "repblend.distillation.loss")) == 12
    assert (
        len(client.get_metric_history(run.info.run_id, "frozen.experts.expert_1.train_loss")) == 3
    )
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"similarity.png", "distilled_pairs.png", "recall_bar.png", "experts_loss.png"} <= plots
    distilled = [a.path for a in client.list_artifacts(run.info.run_id, "distilled")]
    assert distilled == ["distilled/distilled_set.safetensors"]


@pytest.mark.slow
def test_lors_model_in_mlflow_loads_back_and_scores_like_the_evaluation(finished, monkeypatch):
    """The MLflow model is the first evaluation model: same Recall@K as lors.json's first run."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    uri = f"sqlite:///{finished / 'mlflow.db'}"
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("lors_distill")
    run = next(
        r
        for r in MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id])
        if r.info.run_name == "__default__"
    )
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/lors_model")
    finally:
        mlflow.set_tracking_uri(None)
    images = load_bundle(finished / "data/02_intermediate/test_images.safetensors")["images"]
    features = load_bundle(finished / "data/04_feature/test_text_features.safetensors")
    with torch.no_grad():
        scores = model(images, features["embeddings"].float())
    recall = recall_at_k(scores, features["image_index"].long())
    report = json.loads((finished / "data/08_reporting/evaluation/lors.json").read_text())
    assert recall == pytest.approx(report["runs"][0], abs=1e-6)
    local = load_bundle(finished / "data/06_models/lors_eval_model.safetensors")
    assert local.metadata["seed"] == derive_seed(0, 0)  # evaluation.seed 0, first run


@pytest.mark.slow
def test_baseline_sets_are_what_they_claim(finished):
    train_images = load_bundle(finished / "data/02_intermediate/train_images.safetensors")
    features = load_bundle(finished / "data/04_feature/train_text_features.safetensors")
    for method in ["random", "herding", "k_center", "forgetting"]:
        coreset = load_bundle(finished / f"data/07_model_output/{method}_set.safetensors")
        chosen = torch.tensor(coreset.metadata["train_image_indices"])
        assert coreset["images"].shape[0] == 12  # distillation.num_pairs in the test env
        assert len(set(chosen.tolist())) == 12
        normalizer = Normalizer(
            tuple(coreset.metadata["image_mean"]), tuple(coreset.metadata["image_std"])
        )
        torch.testing.assert_close(coreset["images"], normalizer(train_images["images"][chosen]))
        for row, image in zip(coreset["texts"], chosen.tolist(), strict=True):
            match = (features["embeddings"] == row).all(dim=1).nonzero().flatten()
            assert image in features["image_index"][match].tolist()  # one of its own captions
        assert torch.equal(similarity_from_bundle(coreset).matrix(), torch.eye(12))
    # LoRS takes the configured (exact) gradient; TESLA-VL stays on TESLA's under it
    lors = load_bundle(finished / "data/07_model_output/distilled_set.safetensors")
    assert lors.metadata["config"]["grad_mode"] == "full"
    assert lors.metadata["sim_type"] == "lowrank"
    for method, grad_mode in [("tesla_vl", "tesla_one_graph"), ("mtt_vl", "full")]:
        path = f"data/07_model_output/{method}_distilled_set.safetensors"
        baseline = load_bundle(finished / path)
        assert baseline.metadata["method"] == method
        assert baseline.metadata["sim_type"] == "identity"
        assert baseline.metadata["config"]["grad_mode"] == grad_mode
        assert not any(name.startswith("similarity.") for name in baseline.tensors)
    # same budget, iterations, init and expert draws: only the gradient differs
    tesla = load_bundle(finished / "data/07_model_output/tesla_vl_distilled_set.safetensors")
    mtt = load_bundle(finished / "data/07_model_output/mtt_vl_distilled_set.safetensors")
    assert tesla.metadata["init_images"] == mtt.metadata["init_images"]
    assert not torch.equal(tesla["images"], mtt["images"])
    teacher = load_bundle(finished / "data/07_model_output/random_teacher_set.safetensors")
    soft = similarity_from_bundle(teacher).matrix()
    assert torch.equal(soft.diagonal(), torch.ones(12))
    assert 0.0 <= float(soft.min()) < float(soft.max()) <= 1.0


@pytest.mark.slow
def test_external_set_and_cross_architecture(finished):
    """An external set (here: this run's own LoRS file) gets exactly the LoRS numbers."""
    distilled = finished / "data/07_model_output/distilled_set.safetensors"
    params = {
        "evaluation": {
            "external_set": str(distilled),
            "cross_arch": {
                "image_encoder": "convnet",
                "convnet": {"width": 12, "depth": 2, "norm": "instancenorm"},
            },
        }
    }
    run_kedro(finished, ["evaluation"], params={**params, **FROZEN_ON})
    metrics = json.loads((finished / "data/08_reporting/metrics.json").read_text())
    for metric in METRICS:
        assert metrics[f"external.{metric}.mean"] == metrics[f"lors.{metric}.mean"]
    cross = json.loads((finished / "data/08_reporting/evaluation/lors_cross_arch.json").read_text())
    assert cross["image_encoder"] == "convnet"
    assert "lors_cross_arch.mean_recall.mean" in metrics


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(finished, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parents[2] / "notebooks" / "explore_distillation.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    monkeypatch.setenv("LORS_PROJECT", str(finished))  # the kernel inherits the environment
    monkeypatch.setenv("KEDRO_ENV", "test")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # synthetic pairs, similarity heatmap, curves
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| lors |" in text


@pytest.mark.slow
def test_same_config_same_machine_same_bytes(finished, tmp_path):
    """A second run of the same configuration on this machine, in another folder and after
    other runs in the process, writes byte-identical artifacts: every tensor file, CSV, parquet
    and markdown table, and every JSON but for its measured throughput (not plots, logs or the
    MLflow store). Across machines CPU kernels may differ; on one machine every random choice
    comes from a seed parameter."""
    again = make_project_copy(tmp_path)
    run_kedro(again, params=FROZEN_ON)
    first, second = FIRST_RUN[finished], _outputs(again)
    assert len(first) > 30
    assert first.keys() == second.keys()
    for name, content in first.items():
        assert second[name] == content, name


# ------------------------------------------------------------------ kill -9 and resume

KEDRO = Path(sys.executable).with_name("kedro")


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {
        **env,
        "KEDRO_ENV": "test",
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        **extra,
    }


def _kedro(project: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_command([str(KEDRO), "run", *args], 900, cwd=project, env=env)


def _kill_when(project: Path, args: list[str], env: dict[str, str], ready) -> bool:
    """Start ``kedro run`` and SIGKILL its whole process group as soon as ``ready(project)``;
    True when it was killed (False: it finished first). Its output goes to ``kedro-killed.log``
    beside the project."""
    log = project.parent / "kedro-killed.log"
    command = [str(KEDRO), "run", *args]
    with background(command, log, stop=signal.SIGKILL, cwd=project, env=env) as process:
        while process.poll() is None:
            if ready(project):
                return True  # leaving the block kills the group with SIGKILL
            time.sleep(0.02)
        return False


def _exists(pattern: str):
    return lambda project: any(project.glob(pattern))


@pytest.mark.slow
def test_kill_9_at_each_stage_then_resume_gives_the_same_bytes(finished, tmp_path):
    """kill -9 after the first expert, during distillation (after its first checkpoint) and
    during evaluation; each time ``kedro run --only-missing-outputs`` goes on, and at the end
    every artifact equals the uninterrupted run's byte for byte."""
    project = make_project_copy(tmp_path)
    env = _cli_env()
    stages = [
        ("after expert 0", "data/06_models/experts/expert_0.safetensors"),
        ("during distillation", "data/06_models/distillation_checkpoints/*.safetensors"),
        ("during evaluation", "data/08_reporting/evaluation/herding.json"),
    ]
    args = ["--only-missing-outputs", "--params", "frozen.enabled=true"]  # as the first run
    for stage, pattern in stages:
        assert _kill_when(project, args, env, _exists(pattern)), stage
        assert not (project / "data/08_reporting/metrics.json").exists(), stage
    result = _kedro(project, args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = _outputs(project), FIRST_RUN[finished]
    assert resumed.keys() == reference.keys()
    for name, content in reference.items():
        assert resumed[name] == content, name


@pytest.mark.slow
def test_kill_9_during_parallel_experts_then_resume_gives_the_same_bytes(finished, tmp_path):
    """``kedro run --runner ParallelRunner`` (the CLI, one process per expert) killed after its
    first expert and resumed: both experts, one from each run, equal the sequential run's byte
    for byte at the same torch thread count (workers default to 1 thread, and CPU kernels sum
    in another order with another thread count)."""
    project = make_project_copy(tmp_path)
    # workers with the main process's thread count: their bytes equal the sequential run's
    env = _cli_env(LORS_WORKER_THREADS=str(torch.get_num_threads()))
    args = ["--pipelines", "ingestion,features,experts", "--runner", "ParallelRunner"]
    killed = _kill_when(project, args, env, _exists("data/06_models/experts/expert_*.safetensors"))
    assert killed
    result = _kedro(project, [*args, "--only-missing-outputs"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    experts = sorted((project / "data/06_models/experts").glob("*.safetensors"))
    assert len(experts) == 2
    for path in experts:
        assert path.read_bytes() == (finished / path.relative_to(project)).read_bytes(), path.name

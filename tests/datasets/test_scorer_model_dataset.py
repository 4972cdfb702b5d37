"""The trained model as a scorer: safetensors locally, an MLflow pytorch (pt2) model in the run."""

import mlflow
import mlflow.pytorch
import pytest
import torch

from lors_distill.core.data import Normalizer
from lors_distill.core.models import ModelRecipe
from lors_distill.core.retrieval import evaluate_model, recall_at_k
from lors_distill.core.scorer import scorer_bundle, scorer_from_bundle
from lors_distill.datasets import ScorerModelDataset

RECIPE = ModelRecipe.convnet(16, 24, width=8, depth=2)
NORMALIZER = Normalizer((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


def _data(n_images=10, per_image=3):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, 16, 16), dtype=torch.uint8, generator=generator)
    text = torch.randn(n_images * per_image, 24, generator=generator)
    caption_image = torch.arange(n_images).repeat_interleave(per_image)
    return images, text, caption_image


def test_scorer_reproduces_the_models_retrieval():
    model = RECIPE.build(seed=3)
    images, text, caption_image = _data()
    expected = evaluate_model(model, images, text, caption_image, NORMALIZER, torch.device("cpu"))
    scorer = scorer_from_bundle(scorer_bundle(model, RECIPE, NORMALIZER, method="lors"))
    with torch.no_grad():
        scores = scorer(images, text)
    assert scores.shape == (10, 30)
    assert float(scores.abs().max()) <= 1.0 + 1e-5  # cosine similarities
    assert recall_at_k(scores, caption_image) == pytest.approx(expected)


def test_dataset_logs_a_pt2_model_that_loads_back_and_scores(tmp_path, monkeypatch):
    # MLflow refuses any pickle payload with this set: the model must load without one
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.chdir(tmp_path)  # a sqlite store puts artifacts in ./mlruns: keep them here
    model = RECIPE.build(seed=5)
    bundle = scorer_bundle(model, RECIPE, NORMALIZER, method="lors", seed=5)
    dataset = ScorerModelDataset(
        filepath=str(tmp_path / "model.safetensors"), mlflow_model="lors_model"
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # this store's own experiment: an earlier test in this process may have made another
    # store's experiment the active one
    mlflow.set_experiment("scorer_model_dataset")
    try:
        with mlflow.start_run() as run:
            dataset.save(bundle)
        loaded = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/lors_model")
    finally:
        mlflow.set_tracking_uri(None)
    assert dataset.load().equals(bundle)
    images, text, _ = _data(n_images=7)  # batch sizes differ from the export example
    with torch.no_grad():
        expected = scorer_from_bundle(bundle)(images, text)
        got = loaded(images, text)
    assert not isinstance(loaded, type(scorer_from_bundle(bundle)))  # no pickled classes
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_without_an_active_run_only_the_file_is_written(tmp_path):
    dataset = ScorerModelDataset(filepath=str(tmp_path / "m.safetensors"), mlflow_model="m")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        assert mlflow.active_run() is None
        bundle = scorer_bundle(RECIPE.build(seed=0), RECIPE, NORMALIZER)
        dataset.save(bundle)
        assert dataset.load().equals(bundle)
        assert mlflow.search_runs(search_all_experiments=True).empty  # no run was started
    finally:
        mlflow.set_tracking_uri(None)

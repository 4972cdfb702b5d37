"""The project's datasets on a real S3 server (SeaweedFS on 127.0.0.1, through s3fs), with
``credentials`` the way a ``credentials.yml`` entry gives them: the same bytes as on local
disk, and no half-written object after a failed save."""

from __future__ import annotations

import json
import shutil

import matplotlib
import mlflow
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DatasetError

from lors_distill.core.bundle import BundleIntegrityError, TensorBundle, bundle_bytes
from lors_distill.datasets import (
    CSVDataset,
    JSONDataset,
    ParquetDataset,
    TensorBundleDataset,
    TrackedMatplotlibDataset,
    TrajectoryDataset,
)
from tests.kedro_helpers import PROJECT_ROOT, make_project_copy, run_kedro
from tests.s3_server import seaweedfs

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _bundle(seed: int = 0) -> TensorBundle:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator)
    texts = torch.randn(6, 5, generator=generator)
    return TensorBundle({"images": images, "texts": texts}, {"split": "train", "seed": seed})


def test_a_bundle_on_s3_has_the_bytes_of_the_local_file(s3, tmp_path):
    url = "s3://lors/runs/a/train_images.safetensors"
    remote = TensorBundleDataset(filepath=url, image_key="images", credentials=s3.credentials)
    local = TensorBundleDataset(
        filepath=str(tmp_path / "train_images.safetensors"), image_key="images"
    )
    assert not remote.exists()
    bundle = _bundle()
    remote.save(bundle)
    local.save(bundle)
    assert remote.exists()
    stored = s3.filesystem().cat_file("lors/runs/a/train_images.safetensors")
    assert stored == (tmp_path / "train_images.safetensors").read_bytes() == bundle_bytes(bundle)
    loaded = remote.load()
    assert loaded.equals(bundle)
    assert loaded.content_sha256 == bundle.sha256()
    assert remote.read_metadata() == {"split": "train", "seed": 0}
    assert remote.stored_content_hash() == local.stored_content_hash() == bundle.sha256()
    assert remote.preview().startswith("iVBOR")  # a PNG grid of the images, base64
    assert local.preview() == remote.preview()
    assert remote._describe()["filepath"] == url


def test_a_file_url_is_local(tmp_path):
    path = tmp_path / "x.safetensors"
    dataset = TensorBundleDataset(filepath=f"file://{path}")
    dataset.save(_bundle())
    assert path.read_bytes() == bundle_bytes(_bundle())
    assert dataset.load().equals(_bundle())


def test_a_failed_save_leaves_the_old_object_whole(s3):
    url = "s3://lors/runs/b/set.safetensors"
    dataset = TensorBundleDataset(filepath=url, credentials=s3.credentials)
    dataset.save(_bundle(1))
    before = s3.filesystem().cat_file("lors/runs/b/set.safetensors")
    broken = TensorBundle(_bundle(2).tensors, {"not json": object()})
    with pytest.raises(DatasetError, match="not JSON serializable"):
        dataset.save(broken)
    assert s3.filesystem().cat_file("lors/runs/b/set.safetensors") == before
    assert dataset.load().equals(_bundle(1))


def test_a_damaged_object_is_refused_naming_its_url(s3):
    url = "s3://lors/runs/c/set.safetensors"
    data = bytearray(bundle_bytes(_bundle()))
    data[-1] ^= 0xFF  # one bit of the last tensor
    s3.filesystem().pipe_file("lors/runs/c/set.safetensors", bytes(data))
    dataset = TensorBundleDataset(filepath=url, credentials=s3.credentials)
    named = r"s3://lors/runs/c/set\.safetensors: "
    with pytest.raises(DatasetError, match=named + "its tensors do not match"):
        dataset.load()
    s3.filesystem().pipe_file("lors/runs/c/set.safetensors", b"not a safetensors file")
    with pytest.raises(DatasetError, match=named + "unreadable"):
        dataset.load()
    with pytest.raises(BundleIntegrityError, match=named + "unreadable"):
        dataset.read_metadata()


def test_a_trajectory_previews_from_s3(s3):
    trajectory = torch.cumsum(torch.ones(4, 10), dim=0)
    bundle = TensorBundle({"trajectory": trajectory, "train_loss": torch.tensor([3.0, 2.0, 1.0])})
    url = "s3://lors/experts/e0.safetensors"
    dataset = TrajectoryDataset(filepath=url, credentials=s3.credentials)
    dataset.save(bundle)
    rows = dataset.preview()["data"]
    assert [row[0] for row in rows] == [0, 1, 2, 3]
    assert rows[1][1] == pytest.approx(3.0)


def test_tables_json_and_figures_on_s3_round_trip_and_fail_whole(s3, tmp_path):
    fs = s3.filesystem()
    frame = pd.DataFrame({"iteration": [0, 1], "loss": [2.5, 1.25]})
    csv = CSVDataset(filepath="s3://lors/t/history.csv", credentials=s3.credentials)
    csv.save(frame)
    pd.testing.assert_frame_equal(csv.load(), frame)
    parquet = ParquetDataset(filepath="s3://lors/t/captions.parquet", credentials=s3.credentials)
    parquet.save(frame)
    pd.testing.assert_frame_equal(parquet.load(), frame)
    figure = matplotlib.figure.Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    plot = TrackedMatplotlibDataset(filepath="s3://lors/t/curve.png", credentials=s3.credentials)
    plot.save(figure)
    assert fs.cat_file("lors/t/curve.png").startswith(b"\x89PNG")

    report = JSONDataset(filepath="s3://lors/t/metrics.json", credentials=s3.credentials)
    report.save({"lors.mean_recall.mean": 3.5})
    assert report.load() == {"lors.mean_recall.mean": 3.5}
    # json.dump fails half-way through: the object keeps its old content, whole, and the error
    # names the object (not the local temporary file)
    with pytest.raises(DatasetError, match=r"lors/t/metrics\.json.*\n.*not JSON serializable"):
        report.save({"a": 1.0, "b": object()})
    assert json.loads(fs.cat_file("lors/t/metrics.json")) == {"lors.mean_recall.mean": 3.5}

    # kedro-datasets' own JSONDataset writes through fs.open: the same failure publishes the
    # half-written text (what the local-file-then-upload save prevents)
    from kedro_datasets.json import JSONDataset as UpstreamJSONDataset

    upstream = UpstreamJSONDataset(filepath="s3://lors/t/upstream.json", credentials=s3.credentials)
    upstream.save({"lors.mean_recall.mean": 3.5})
    with pytest.raises(DatasetError, match="not JSON serializable"):
        upstream.save({"a": 1.0, "b": object()})
    half = fs.cat_file("lors/t/upstream.json")
    assert half.startswith(b"{")
    assert b'"a": 1.0' in half
    with pytest.raises(json.JSONDecodeError):
        json.loads(half)


def test_a_bundle_on_s3_is_logged_to_mlflow(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("object-storage")
        dataset = TensorBundleDataset(
            filepath="s3://lors/runs/d/distilled_set.safetensors",
            artifact_path="distilled",
            credentials=s3.credentials,
        )
        with mlflow.start_run() as run:
            dataset.save(_bundle(3))
        fetched = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="distilled/distilled_set.safetensors"
        )
        with open(fetched, "rb") as handle:
            assert handle.read() == bundle_bytes(_bundle(3))
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_the_cluster_roots_put_every_artifact_on_s3_with_the_local_bytes(s3, tmp_path, monkeypatch):
    """``conf/cluster/globals.yml`` (every artifact under ``LORS_DATA_ROOT``, with the
    ``storage`` credentials), in the tiny ``test`` environment: ``kedro run`` of ingestion,
    features and experts writes its artifacts to the bucket, byte for byte what a local run
    writes under ``data/``."""
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    local = make_project_copy(tmp_path / "local")
    run_kedro(local, ["ingestion", "features", "experts"])
    remote = make_project_copy(tmp_path / "remote")
    shutil.copy(PROJECT_ROOT / "conf/cluster/globals.yml", remote / "conf/test/globals.yml")
    (remote / "conf/test/credentials.yml").write_text(yaml.safe_dump({"storage": s3.credentials}))
    monkeypatch.setenv("LORS_DATA_ROOT", "s3://lors/cluster-run")
    run_kedro(remote, ["ingestion", "features", "experts"])
    fs = s3.filesystem()
    stored = {
        key.removeprefix("lors/cluster-run/"): fs.cat_file(key)
        for key in fs.find("lors/cluster-run")
    }
    written = {
        path.relative_to(local / "data").as_posix(): path.read_bytes()
        for path in (local / "data").rglob("*")
        if path.is_file() and path.name != ".gitkeep"
    }
    assert not list((remote / "data").rglob("*.safetensors"))  # nothing went to local disk
    assert "06_models/experts/expert_1.safetensors" in stored
    assert stored.keys() == written.keys()
    for name, content in written.items():
        if name.endswith(".json"):
            assert _comparable(json.loads(stored[name])) == _comparable(json.loads(content)), name
        else:
            assert stored[name] == content, name


def _comparable(value):
    """A report without what differs between two project folders and two runs: the raw data's
    absolute folder (``root``) and the measured throughput (``*per_second*``)."""
    if isinstance(value, dict):
        return {
            k: _comparable(v) for k, v in value.items() if "per_second" not in k and k != "root"
        }
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value

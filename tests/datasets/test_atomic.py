"""JSON, CSV, parquet, text and plot outputs are written atomically (temporary file + rename)."""

import json
import os
import stat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from kedro.io import DatasetError

from lors_distill.datasets import (
    CSVDataset,
    JSONDataset,
    ParquetDataset,
    TrackedCSVDataset,
    TrackedMatplotlibDataset,
    TrackedTextDataset,
)


def test_a_save_that_fails_midway_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "reports" / "out.json"
    dataset = JSONDataset(filepath=str(path))
    dataset.save({"a": 1})
    with pytest.raises(DatasetError, match="not JSON serializable") as caught:
        dataset.save({"b": 2, "z": object()})  # json.dump has written '{"b": 2, "z": ' by then
    assert str(path) in str(caught.value)
    assert ".tmp" not in str(caught.value)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_every_file_dataset_round_trips_with_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        frame = pd.DataFrame({"iteration": [1, 2], "loss": [0.5, 0.25]})
        figure = plt.figure()
        plt.plot([0, 1])
        cases = [
            (JSONDataset(filepath=str(tmp_path / "a.json")), {"k": [1, 2]}),
            (CSVDataset(filepath=str(tmp_path / "b.csv")), frame),
            (ParquetDataset(filepath=str(tmp_path / "c.parquet")), frame),
            (
                TrackedCSVDataset(
                    filepath=str(tmp_path / "d.csv"), step_column="iteration", prefix="x"
                ),
                frame,
            ),
            (TrackedTextDataset(filepath=str(tmp_path / "e.md")), "| a |\n"),
            (TrackedMatplotlibDataset(filepath=str(tmp_path / "f.png")), figure),
        ]
        for dataset, data in cases:
            dataset.save(data)
            if isinstance(data, pd.DataFrame):
                assert dataset.load().equals(data)
            elif not isinstance(data, plt.Figure):
                assert dataset.load() == data
        assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["a.json", "b.csv", "c.parquet", "d.csv", "e.md", "f.png"]  # no debris
        for path in tmp_path.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    finally:
        os.umask(umask)


def test_tensor_bundles_too(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    from lors_distill.core import bundle as bundle_module
    from lors_distill.core.bundle import TensorBundle, load_bundle, save_bundle

    path = tmp_path / "b.safetensors"
    umask = os.umask(0o022)
    try:
        save_bundle(TensorBundle({"x": torch.ones(3)}), path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(TensorBundle({"x": torch.zeros(3)}), path)
    assert torch.equal(load_bundle(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]
    assert safetensors.torch  # the real writer is untouched outside this test

import json

import pandas as pd
import pytest

from lors_distill.core.bundle import load_bundle
from lors_distill.core.config import ParameterError
from lors_distill.core.sources import BadRecordError
from tests.folders import make_jsonl_folder
from tests.kedro_helpers import load_catalog, run_kedro


def output_files(project):
    return sorted(
        p.relative_to(project).as_posix()
        for p in (project / "data").rglob("*")
        if p.is_file() and p.name != ".gitkeep"
    )


def test_scenes_ingestion_through_kedro(project_copy):
    run_kedro(project_copy, ["ingestion"])
    catalog = load_catalog(project_copy)
    train = catalog.load("train_images")
    assert train["images"].shape == (64, 3, 16, 16)
    assert catalog.load("test_images")["images"].shape == (16, 3, 16, 16)
    assert train.metadata["source"] == "scenes"
    captions = catalog.load("captions")
    assert len(captions) == (64 + 16 + 16) * 5
    assert captions.groupby(["split", "image_index"]).size().eq(5).all()
    report = catalog.load("ingestion_report")
    assert report["images"] == {"train": 64, "val": 16, "test": 16}
    assert report["bad_records"]["total"] == 0


def test_same_seed_same_bytes(project_copy, tmp_path):
    run_kedro(project_copy, ["ingestion"])
    first = (project_copy / "data/02_intermediate/train_images.safetensors").read_bytes()
    run_kedro(project_copy, ["ingestion"])
    assert (project_copy / "data/02_intermediate/train_images.safetensors").read_bytes() == first
    run_kedro(project_copy, ["ingestion"], params={"ingestion": {"seed": 1}})
    other = load_bundle(project_copy / "data/02_intermediate/train_images.safetensors")
    assert other["images"].numpy().tobytes() != first


def test_bad_parameter_stops_before_any_node(project_copy):
    with pytest.raises(ParameterError, match=r"ingestion\.image_size"):
        run_kedro(project_copy, ["ingestion"], params={"ingestion": {"image_size": "large"}})
    assert output_files(project_copy) == []
    # every section is checked up front, even one the selected pipeline does not use
    with pytest.raises(ParameterError, match=r"experts\.num_experts"):
        run_kedro(project_copy, ["ingestion"], params={"experts": {"num_experts": 0}})
    assert output_files(project_copy) == []


def test_bad_record_writes_nothing(project_copy, tmp_path):
    root = tmp_path / "photos"
    make_jsonl_folder(root, count=12)
    with (root / "captions.jsonl").open("a") as handle:
        handle.write('{"image": "images/missing.jpg", "captions": ["x"]}\n')
    params = {"ingestion": {"source": "jsonl", "root": str(root)}}
    params["ingestion"]["jsonl"] = {"val_images": 2, "test_images": 3}
    with pytest.raises(BadRecordError, match="captions.jsonl line 13"):
        run_kedro(project_copy, ["ingestion"], params=params)
    assert output_files(project_copy) == []
    params["ingestion"]["on_bad_record"] = "skip"
    run_kedro(project_copy, ["ingestion"], params=params)
    report = json.loads((project_copy / "data/08_reporting/ingestion_report.json").read_text())
    assert report["bad_records"] == {"total": 1, "missing_image": 1}
    assert report["images"] == {"train": 7, "val": 2, "test": 3}
    captions = pd.read_parquet(project_copy / "data/02_intermediate/captions.parquet")
    assert "images/missing.jpg" not in set(captions.image_id)

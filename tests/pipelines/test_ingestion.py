import json
import logging

import pandas as pd
import pytest

from lors_distill.core.bundle import load_bundle
from lors_distill.core.config import IngestionParams, ParameterError
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
    # the catalog holds the validated parameter objects the nodes receive
    assert isinstance(catalog.load("params:ingestion"), IngestionParams)
    assert catalog.load("params:ingestion").scenes.train_images == 64


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


def test_cross_section_and_structure_keys_stop_before_any_node(project_copy):
    # the test env trains 2 experts: expert 2 does not exist
    with pytest.raises(ParameterError, match=r"evaluation\.teacher_expert \(2\) must be below"):
        run_kedro(project_copy, ["ingestion"], params={"evaluation": {"teacher_expert": 2}})
    with pytest.raises(ParameterError, match=r"baselines\.expert_index \(5\) must be below"):
        run_kedro(project_copy, ["ingestion"], params={"baselines": {"expert_index": 5}})
    # a structure key that is not an integer is reported by name, not by the pipeline builder
    for bad in ("abc", 2.5):
        with pytest.raises(ParameterError, match=r"experts\.num_experts"):
            run_kedro(project_copy, ["ingestion"], params={"experts": {"num_experts": bad}})
    assert output_files(project_copy) == []


def test_num_pairs_beyond_the_train_split_stops_at_the_end_of_ingestion(
    project_copy, tmp_path, caplog
):
    root = make_jsonl_folder(tmp_path / "photos", count=12)  # 7 train images after 2 + 3
    params = {
        "ingestion": {
            "source": "jsonl",
            "root": str(root),
            "jsonl": {"val_images": 2, "test_images": 3},
        },
        "distillation": {"num_pairs": 8, "mini_batch_size": 4},
    }
    # a run that goes on to distil stops when ingestion ends, before its outputs are saved
    with pytest.raises(ParameterError, match=r"num_pairs \(8\) exceeds the 7 train images"):
        run_kedro(project_copy, ["ingestion", "distillation"], params=params)
    assert output_files(project_copy) == []
    with caplog.at_level(logging.WARNING):  # ingestion alone: a warning, and its outputs
        run_kedro(project_copy, ["ingestion"], params=params)
    assert "num_pairs (8) exceeds the 7 train images" in caplog.text
    assert (project_copy / "data/02_intermediate/train_images.safetensors").is_file()

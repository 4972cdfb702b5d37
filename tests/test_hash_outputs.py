"""benchmarks/hash_outputs.py: the behaviour-unchanged check of a refactor."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hash_outputs.py"
_spec = importlib.util.spec_from_file_location("hash_outputs", SCRIPT)
hash_outputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hash_outputs)


def _run(root: Path, value: float = 1.0, rate: float = 10.0, recall: float = 3.5) -> Path:
    (root / "06_models").mkdir(parents=True)
    (root / "08_reporting").mkdir()
    save_file(
        {"w": torch.full((2, 3), value), "b": torch.zeros(3)}, root / "06_models/m.safetensors"
    )
    report = {"mean_recall": recall, "throughput": {"images_per_second": rate}}
    (root / "08_reporting/r.json").write_text(json.dumps(report))
    (root / "08_reporting/t.csv").write_text("method,mean\nlors,3.5\n")
    (root / "08_reporting/run.log").write_text(f"took {rate} s\n")
    return root


def test_same_outputs_give_the_same_hashes_and_timings_are_masked(tmp_path):
    first = hash_outputs.hash_tree(_run(tmp_path / "a"))
    second = hash_outputs.hash_tree(_run(tmp_path / "b", rate=12.5))  # other timings, logs
    assert first == second
    assert [path for path, _ in first] == [
        "06_models/m.safetensors",
        "08_reporting/r.json",
        "08_reporting/t.csv",
    ]


@pytest.mark.parametrize("change", [{"value": 1.0000001}, {"recall": 3.6}])
def test_a_changed_tensor_or_result_changes_its_hash(tmp_path, change):
    base = dict(hash_outputs.hash_tree(_run(tmp_path / "a")))
    other = dict(hash_outputs.hash_tree(_run(tmp_path / "b", **change)))
    changed = {path for path in base if base[path] != other[path]}
    assert changed == {"06_models/m.safetensors" if "value" in change else "08_reporting/r.json"}


def test_bad_json_names_the_file_and_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(ValueError, match=r"x\.json: not valid JSON \(line 2\)"):
        hash_outputs.file_digest(bad)

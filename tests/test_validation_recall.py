"""benchmarks/validation_recall.py: the validation numbers a tuning sweep may read."""

import importlib.util
import json
import sys

import pytest

from tests.kedro_helpers import PROJECT_ROOT
from tests.processes import run, run_ok

SCRIPT = PROJECT_ROOT / "benchmarks" / "validation_recall.py"


def _module():
    spec = importlib.util.spec_from_file_location("validation_recall", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(curves):
    runs = [{"epoch": 0, "val_curve": curve} for curve in curves]
    return {"method": "lors", "val_selected": {"runs": runs}}


def test_last_and_best_validation_recall_over_seeds():
    curves = [{"20": 1.0, "40": 3.0, "100": 2.0}, {"20": 2.0, "40": 1.0, "100": 4.0}]
    recall = _module().validation_recall(_report(curves))
    assert recall["last"] == pytest.approx((3.0, 1.0))  # epoch 100 of each seed: 2 and 4
    assert recall["best"] == pytest.approx((3.5, 0.5))  # 3 and 4
    assert recall["seeds"] == 2
    assert _module().validation_recall({"method": "x", "runs": []}) is None


def test_cli_prints_a_table_and_fails_clearly_on_an_empty_folder(tmp_path):
    (tmp_path / "lors.json").write_text(json.dumps(_report([{"20": 1.5, "100": 2.5}])))
    (tmp_path / "external.json").write_text(json.dumps({"method": "external", "skipped": "x"}))
    done = run_ok([sys.executable, str(SCRIPT), str(tmp_path)], 120)
    assert "| lors | 2.50 ± 0.00 | 2.50 ± 0.00 | 1 |" in done.stdout
    assert "external" not in done.stdout
    empty = run([sys.executable, str(SCRIPT), str(tmp_path / "none")], 120)
    assert empty.returncode != 0
    assert "no evaluation reports" in empty.stderr

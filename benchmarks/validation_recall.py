"""Validation-split recall of every evaluated set of a finished run: what tuning may read.

The evaluation scores each fresh model on the validation split every ``evaluation.select_every``
epochs (``val_selected.runs[*].val_curve`` in ``data/08_reporting/evaluation/<method>.json``).
This prints, per method, the validation mean recall after the last epoch and at the best
checked epoch (mean ± std over seeds), so a sweep can choose settings without looking at the
test split:

    python benchmarks/validation_recall.py                       # data/08_reporting/evaluation
    python benchmarks/validation_recall.py path/to/evaluation --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def validation_recall(report: dict) -> dict | None:
    """``{"last": (mean, std), "best": (mean, std), "seeds": n}`` or None without curves."""
    chosen = report.get("val_selected")
    if not chosen:
        return None
    curves = [run["val_curve"] for run in chosen["runs"]]
    last = [curve[max(curve, key=int)] for curve in curves]
    best = [max(curve.values()) for curve in curves]
    return {
        "last": (statistics.fmean(last), statistics.pstdev(last)),
        "best": (statistics.fmean(best), statistics.pstdev(best)),
        "seeds": len(curves),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="data/08_reporting/evaluation", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args()
    files = sorted(args.folder.glob("*.json"))
    if not files:
        sys.exit(f"{args.folder}: no evaluation reports (run the evaluation pipeline first)")
    rows = {}
    for path in files:
        report = json.loads(path.read_text())
        if "skipped" in report:
            continue
        recall = validation_recall(report)
        if recall is not None:
            rows[report["method"]] = recall
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| method | val mean recall, last epoch | val mean recall, best checked epoch | seeds |")
    print("|---|---|---|---|")
    for method, r in rows.items():
        last, best = r["last"], r["best"]
        print(
            f"| {method} | {last[0]:.2f} ± {last[1]:.2f} | {best[0]:.2f} ± {best[1]:.2f} "
            f"| {r['seeds']} |"
        )


if __name__ == "__main__":
    main()

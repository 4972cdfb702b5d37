"""Wall time of the built-in ``experts`` pipeline with Kedro's ``SequentialRunner`` and
``ParallelRunner`` and with ``lors_distill.runners.DaskRunner``, side by side on this machine.

In a throw-away copy of the project (the repository's own ``data/`` is never touched), ingestion
and features run once; then ``kedro run --pipelines experts`` runs with each runner in turn, the
order rotated each round, every run in a fresh process that starts from no trajectories:

* ``sequential``: one process with torch's default threads (one per core);
* ``parallel``: ``--runner ParallelRunner``, one worker process per core with one torch thread
  each (``LORS_WORKER_THREADS``, the project's default);
* ``dask``: ``--runner lors_distill.runners.DaskRunner`` on a ``LocalCluster`` that the run
  starts from ``conf/<env>/dask.yml`` (``--workers`` workers x 1 thread), its start included.

The time is the ``kedro run`` process's wall time, start-up included, as a user sees it. It
prints each run, the medians, and the ratios to ``sequential``:

    python benchmarks/runners.py                # built-in experts (5 x 6 epochs), 2 rounds
    python benchmarks/runners.py --env test --rounds 3 --json

Time it alone: the runs use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
RUNNERS = ("sequential", "parallel", "dask")


def project_copy(folder: Path) -> Path:
    """``pyproject.toml`` and ``conf/`` (without ``conf/local``) with empty data layers."""
    project = folder / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    (project / "src").mkdir()
    shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    for layer in sorted((ROOT / "data").iterdir()):
        if layer.is_dir():
            (project / "data" / layer.name).mkdir(parents=True)
    return project


def kedro(project: Path, env: str, *args: str) -> float:
    """Wall seconds of ``kedro run --env <env> <args>`` in ``project``; fails on an error."""
    environ = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    command = [KEDRO, "run", "--env", env, *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=environ, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def runner_args(runner: str) -> list[str]:
    return {
        "sequential": [],
        "parallel": ["--runner", "ParallelRunner"],
        "dask": ["--runner", "lors_distill.runners.DaskRunner"],
    }[runner]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base", help="configuration environment (base)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lors-runners-") as folder:
        project = project_copy(Path(folder))
        env_folder = project / "conf" / args.env
        env_folder.mkdir(exist_ok=True)
        options = {"n_workers": args.workers, "threads_per_worker": 1}
        (env_folder / "dask.yml").write_text(
            json.dumps({"cluster": "local", "options": options})  # JSON is YAML
        )
        upstream = kedro(project, args.env, "--pipelines", "ingestion,features")
        times: dict[str, list[float]] = {runner: [] for runner in RUNNERS}
        for round_index in range(args.rounds):
            order = RUNNERS[round_index % 3 :] + RUNNERS[: round_index % 3]
            for runner in order:
                shutil.rmtree(project / "data" / "06_models" / "experts", ignore_errors=True)
                seconds = kedro(project, args.env, "--pipelines", "experts", *runner_args(runner))
                times[runner].append(seconds)
                if not args.json:
                    print(f"round {round_index + 1} {runner:>10}: {seconds:7.1f} s", flush=True)

    medians = {runner: statistics.median(values) for runner, values in times.items()}
    report = {
        "env": args.env,
        "rounds": args.rounds,
        "dask_workers": args.workers,
        "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "ingestion_and_features_s": round(upstream, 1),
        "seconds": {runner: [round(s, 1) for s in values] for runner, values in times.items()},
        "median_s": {runner: round(m, 1) for runner, m in medians.items()},
        "speedup_vs_sequential": {
            runner: round(medians["sequential"] / m, 2) for runner, m in medians.items()
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for runner in RUNNERS:
        print(
            f"{runner:>10}: median {medians[runner]:7.1f} s, "
            f"{report['speedup_vs_sequential'][runner]:.2f}x sequential"
        )


if __name__ == "__main__":
    main()

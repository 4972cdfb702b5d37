"""DVC end to end in a throw-away copy of the repository (``KEDRO_ENV=test``): a local remote,
then an S3 remote on a real S3 server (SeaweedFS on 127.0.0.1, through dvc-s3)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.kedro_helpers import PROJECT_ROOT
from tests.processes import run_ok
from tests.s3_server import ACCESS_KEY, SECRET_KEY, seaweedfs

STAGES = {"ingestion", "features", "experts", "distillation", "baselines", "evaluation"}


def sh(args: list[str], cwd: Path, env: dict) -> str:
    done = run_ok(args, 900, cwd=cwd, env=env)
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


@pytest.fixture
def repo(tmp_path):
    """The repository's tracked (and not ignored) files, committed in a fresh git repo."""
    listed = run_ok(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], 60, cwd=PROJECT_ROOT
    ).stdout.split()
    root = tmp_path / "repo"
    for name in listed:
        if (PROJECT_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, root / name)
    env = {**os.environ, "KEDRO_ENV": "test", "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    sh(["git", "init", "-q"], root, env)
    sh([*git, "add", "-A"], root, env)
    sh([*git, "commit", "-qm", "copy"], root, env)
    return root, env, git


@pytest.mark.slow
def test_repro_is_incremental_and_push_pull_restores(repo, tmp_path):
    root, env, git = repo
    first = sh(["dvc", "repro"], root, env)
    assert ran(first) == STAGES
    assert "Data and pipelines are up to date" in sh(["dvc", "repro"], root, env)
    sh([*git, "add", "-A"], root, env)
    sh([*git, "commit", "-qm", "first run"], root, env)

    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], root, env))
    values = next(iter(metrics.values()))["data"]["data/08_reporting/metrics.json"]["data"]
    assert 0 <= values["lors.mean_recall.mean"] <= 100

    # a parameter change reruns the stages that read it and nothing upstream (which stage
    # tracks which section: tests/test_dvc_deps.py)
    params = root / "conf/base/parameters_evaluation.yml"
    text = params.read_text()
    assert "weight_decay: 0.0005\n" in text
    params.write_text(text.replace("weight_decay: 0.0005\n", "weight_decay: 0.001\n", 1))
    diff = sh(["dvc", "params", "diff"], root, env)
    assert "evaluation.weight_decay" in diff
    assert ran(sh(["dvc", "repro"], root, env)) == {"evaluation"}
    sh([*git, "add", "-A"], root, env)
    sh([*git, "commit", "-qm", "weight decay"], root, env)

    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], root, env)
    sh(["dvc", "push"], root, env)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], clone, env)
    sh(["dvc", "pull"], clone, env)
    for name in ["data/07_model_output/distilled_set.safetensors", "data/06_models/experts"]:
        assert (clone / name).exists(), name
    assert "Data and pipelines are up to date" in sh(["dvc", "repro"], clone, env)

    # the same through an S3 remote (dvc-s3) on a real S3 server: the remote and its endpoint
    # are committed, the keys stay in each clone's .dvc/config.local
    with seaweedfs(tmp_path / "s3") as s3:
        sh(["dvc", "remote", "add", "s3", "s3://lors/dvc"], root, env)
        sh(["dvc", "remote", "modify", "s3", "endpointurl", s3.endpoint], root, env)
        sh([*git, "commit", "-qam", "s3 remote"], root, env)
        keys = [("access_key_id", ACCESS_KEY), ("secret_access_key", SECRET_KEY)]

        def with_keys(repository: Path) -> None:
            for option, value in keys:
                sh(["dvc", "remote", "modify", "--local", "s3", option, value], repository, env)

        with_keys(root)
        sh(["dvc", "push", "-r", "s3"], root, env)
        assert s3.filesystem().find("lors/dvc")
        from_s3 = tmp_path / "from_s3"
        sh(["git", "clone", "-q", str(root), str(from_s3)], tmp_path, env)
        with_keys(from_s3)
        sh(["dvc", "pull", "-r", "s3"], from_s3, env)
        for name in ["data/07_model_output/distilled_set.safetensors", "data/08_reporting"]:
            assert (from_s3 / name).exists(), name
        distilled = "data/07_model_output/distilled_set.safetensors"
        assert (from_s3 / distilled).read_bytes() == (root / distilled).read_bytes()
        assert "Data and pipelines are up to date" in sh(["dvc", "repro"], from_s3, env)

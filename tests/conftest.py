"""Shared fixtures. Telemetry and hub access are off for every test."""

from __future__ import annotations

import os

# pytest runs two workers (pyproject addopts ``-n 2``): one thread each keeps them from
# oversubscribing two cores (two torch processes with two threads each run many times slower).
# Set before torch is imported; the kedro, dvc and notebook processes the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = "1"

from pathlib import Path

import pytest

from tests.kedro_helpers import make_project_copy
from tests.tiny_models import tiny_clip  # noqa: F401 - shared fixture

for _name, _value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(_name, _value)
# a tracking server exported in the developer's shell must not receive the tests' runs
os.environ.pop("MLFLOW_TRACKING_URI", None)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FLICKR8K = SHARED_DATA / "flickr8k_public"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throw-away copy of the Kedro project (config + metadata, empty data layers).

    Pipeline tests run in it so they never touch the repository's own ``data/``.
    """
    return make_project_copy(tmp_path)


def require_flickr8k() -> Path:
    """Skip the calling test when the shared Flickr8k sample is not on this machine."""
    if not (FLICKR8K / "captions.jsonl").is_file():
        pytest.skip(f"needs the Flickr8k sample at {FLICKR8K} (absent on this machine)")
    return FLICKR8K


# The longest files first: pytest-xdist (``--dist loadfile``) hands each worker the next file in
# collection order when it is free, so these start at once instead of running alone at the end.
_LONGEST_FIRST = (
    "tests/test_dvc.py",
    "tests/pipelines/test_end_to_end.py",
    "tests/pipelines/test_paper_envs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(item.path).resolve().relative_to(PROJECT_ROOT).as_posix()
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept

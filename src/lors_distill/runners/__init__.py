"""Runners beyond Kedro's own: ``lors_distill.runners.DaskRunner`` (a Dask cluster).

``kedro run --runner lors_distill.runners.DaskRunner``. Imported on first use, so that
sessions that never use it do not import Dask.
"""

from typing import Any

__all__ = ["DaskRunner"]


def __getattr__(name: str) -> Any:
    if name == "DaskRunner":
        from lors_distill.runners.dask_runner import DaskRunner

        return DaskRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

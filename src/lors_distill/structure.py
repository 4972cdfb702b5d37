"""Pipeline structure that depends on parameters: how many expert nodes to build.

Each expert is its own Kedro node (so ``--runner ParallelRunner`` trains them in parallel and
``--only-missing-outputs`` resumes at the first unwritten expert). Their number is the parameter
``experts.num_experts``, which Kedro only knows once a session has merged the environment's
config and ``--params``. :class:`~lors_distill.hooks.PipelineStructureHook` reads it from the
session's context with :func:`session_num_experts` and installs the pipelines built for it;
outside a session (``kedro viz``, ``kedro registry``) :func:`configured_num_experts` reads it
from ``conf/base`` + ``conf/local``. Nothing here keeps state: the pipelines a session runs are
held by Kedro's own registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lors_distill.config_loader import load_parameters


def session_num_experts(parameters: Mapping[str, Any]) -> int | None:
    """``experts.num_experts`` of a session's merged parameters, or None when it is not a
    positive integer (the parameter validation reports that, naming the key)."""
    value = (parameters.get("experts") or {}).get("num_experts", 0)
    try:
        count = int(value) if float(value).is_integer() and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        count = 0
    return count if count >= 1 else None


def configured_num_experts(conf_source: Path | None = None) -> int:
    """The expert count of ``conf/base`` + ``conf/local`` (no session, so no ``--env`` and no
    ``--params``)."""
    parameters = load_parameters(conf_source or Path.cwd() / "conf")
    return int(parameters["experts"]["num_experts"])

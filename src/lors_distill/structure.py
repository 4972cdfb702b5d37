"""Pipeline structure that depends on parameters: how many expert nodes and caption-encoding
shards to build, and whether the frozen-backbone protocol runs (``frozen.enabled``).

Each expert is its own Kedro node (so ``--runner ParallelRunner`` trains them in parallel and
``--only-missing-outputs`` resumes at the first unwritten expert), and so is each caption shard
(``features.shards``). Their numbers are the parameters ``experts.num_experts`` and
``features.shards``, which Kedro only knows once a session has merged the environment's config
and ``--params``. :class:`~lors_distill.hooks.PipelineStructureHook` reads them from the
session's context with :func:`session_structure` and installs the pipelines built for them;
outside a session (``kedro viz``, ``kedro registry``) :func:`configured_structure` reads them
from ``conf/base`` + ``conf/local``. Nothing here keeps state: the pipelines a session runs are
held by Kedro's own registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lors_distill.config_loader import load_parameters


class Structure(NamedTuple):
    num_experts: int
    feature_shards: int
    frozen: bool = False


def _enabled(section: Mapping[str, Any] | None) -> bool | None:
    value = (section or {}).get("enabled", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value if isinstance(value, bool) else None


def _positive_int(section: Mapping[str, Any] | None, key: str, default: int) -> int | None:
    value = (section or {}).get(key, default)
    try:
        count = int(value) if float(value).is_integer() and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        count = 0
    return count if count >= 1 else None


def session_structure(parameters: Mapping[str, Any]) -> Structure | None:
    """``experts.num_experts`` and ``features.shards`` of a session's merged parameters, or
    None when one is not a positive integer (the parameter validation reports that, naming
    the key)."""
    experts = _positive_int(parameters.get("experts"), "num_experts", 0)
    shards = _positive_int(parameters.get("features"), "shards", 1)
    frozen = _enabled(parameters.get("frozen"))
    if experts is None or shards is None or frozen is None:
        return None
    return Structure(experts, shards, frozen)


def configured_structure(conf_source: Path | None = None) -> Structure:
    """The structure of ``conf/base`` + ``conf/local`` (no session, so no ``--env`` and no
    ``--params``)."""
    parameters = load_parameters(conf_source or Path.cwd() / "conf")
    return Structure(
        int(parameters["experts"]["num_experts"]),
        int(parameters["features"].get("shards", 1)),
        bool(_enabled(parameters.get("frozen"))),
    )

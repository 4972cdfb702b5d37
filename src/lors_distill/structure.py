"""Pipeline structure that depends on parameters: how many expert nodes to build.

Each expert is its own Kedro node (so ``--runner ParallelRunner`` trains them in parallel and
``--only-missing-outputs`` resumes at the first unwritten expert). Their number is the parameter
``experts.num_experts``, which Kedro only knows once a session has merged the environment's
config and ``--params``. :class:`~lors_distill.hooks.PipelineStructureHook` records it from the
session's context before the pipelines are built; outside a session (``kedro viz``, ``kedro
registry``) it is read from ``conf/base`` + ``conf/local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lors_distill.config_loader import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

_ACTIVE: dict[str, int] = {}


def activate(parameters: dict[str, Any]) -> bool:
    """Record the session's expert count; returns True when the structure changed.

    A value that is not a positive integer is left for the parameter validation to report
    (naming ``experts.num_experts``); the structure keeps the configured count until then.
    """
    value = (parameters.get("experts") or {}).get("num_experts", 0)
    try:
        count = int(value) if float(value).is_integer() and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        count = 0
    if count < 1 or _ACTIVE.get("num_experts") == count:
        return False
    _ACTIVE["num_experts"] = count
    return True


def num_experts(conf_source: Path | None = None) -> int:
    """The number of expert nodes for the pipelines being built."""
    if "num_experts" in _ACTIVE:
        return _ACTIVE["num_experts"]
    source = conf_source or Path.cwd() / "conf"
    # the project's own loader settings: its custom resolvers must stay registered (a loader
    # created without them unregisters oc.env for every loader in the process)
    loader = CONFIG_LOADER_CLASS(conf_source=str(source), **CONFIG_LOADER_ARGS)
    return int(loader["parameters"]["experts"]["num_experts"])

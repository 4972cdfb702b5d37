"""Parameters as the project ships them, for tests to tweak: the one way tests load parameters,
through the project's own config loader (its resolvers and soft merge included)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lors_distill.config_loader import CONFIG_LOADER_ARGS, load_parameters, load_section

CONF = Path(__file__).resolve().parents[1] / "conf"


def base_params(env: str | None = None, runtime_params: dict | None = None) -> dict:
    """The merged parameters exactly as ``kedro run [--env <env>] [--params ...]`` sees them:
    ``conf/base`` alone without ``env`` (never a developer's ``conf/local``), else ``conf/base``
    merged with ``conf/<env>``. A deep copy: tests may change it freely."""
    parameters = load_parameters(CONF, env or CONFIG_LOADER_ARGS["base_env"], runtime_params)
    return copy.deepcopy(parameters)


def section(name: str, env: str | None = "test", **overrides: Any) -> Any:
    """The typed object a node receives for ``params:<name>``: the section of ``env`` (the tiny
    ``test`` environment unless told) with ``overrides`` applied to its top-level keys."""
    return load_section(name, CONF, env or CONFIG_LOADER_ARGS["base_env"], **overrides)

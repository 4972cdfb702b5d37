"""Parameter sections as the project ships them, for tests to tweak: the one way tests load
parameters, through the project's own config loader (its resolvers and soft merge included)."""

from __future__ import annotations

import copy
from pathlib import Path

from lors_distill.config_loader import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

CONF = Path(__file__).resolve().parents[1] / "conf"


def base_params(env: str | None = None, runtime_params: dict | None = None) -> dict:
    """The merged parameters exactly as ``kedro run [--env <env>] [--params ...]`` sees them:
    ``conf/base`` alone without ``env`` (never a developer's ``conf/local``), else ``conf/base``
    merged with ``conf/<env>``. A deep copy: tests may change it freely."""
    loader = CONFIG_LOADER_CLASS(
        conf_source=str(CONF),
        env=env or CONFIG_LOADER_ARGS["base_env"],
        runtime_params=runtime_params or {},
        **CONFIG_LOADER_ARGS,
    )
    return copy.deepcopy(dict(loader["parameters"]))

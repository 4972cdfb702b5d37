"""How the project reads ``conf/``: the config loader class and its arguments, in one place.

``settings.py`` hands them to Kedro; :func:`load_parameters` reads the parameters with them
outside a session (:mod:`lors_distill.structure`, tests, benchmarks). Kept apart from
``settings.py`` so that reading them imports no hooks.
"""

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from lors_distill.core.config import parse_section
from lors_distill.resolvers import RESOLVERS
from lors_distill.runners.cluster import CONFIG_KEY, CONFIG_PATTERNS

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments (test, flickr8k, ...) override single keys without restating whole sections.
    "merge_strategy": {"parameters": "soft"},
    # ${lors.choose:budget, ...}: the paper-scale environments' budget presets (conf/flickr30k)
    # ${oc.env:...}: conf/base/mlflow.yml reads MLFLOW_TRACKING_URI (Kedro allows oc.env only in
    # credentials unless it is registered here)
    "custom_resolvers": {**RESOLVERS, "oc.env": oc.env},
    # conf/<env>/dask.yml: the cluster of lors_distill.runners.DaskRunner
    "config_patterns": {CONFIG_KEY: CONFIG_PATTERNS},
}


def load_parameters(
    conf_source: str | Path, env: str | None = None, runtime_params: dict | None = None
) -> dict:
    """The merged parameters as ``kedro run [--env <env>] [--params ...]`` sees them, read
    from ``conf_source`` with the project's loader settings (its resolvers must stay
    registered: a loader created without them unregisters ``oc.env`` for every loader in the
    process). ``env=None``: Kedro's default, ``conf/base`` + ``conf/local``."""
    loader = CONFIG_LOADER_CLASS(
        conf_source=str(conf_source),
        **({"env": env} if env else {}),
        runtime_params=runtime_params or {},
        **CONFIG_LOADER_ARGS,
    )
    return dict(loader["parameters"])


def load_section(
    name: str, conf_source: str | Path, env: str | None = None, **overrides: Any
) -> Any:
    """The typed object a node receives for ``params:<name>``, read like
    :func:`load_parameters`, with ``overrides`` applied to the section's top-level keys."""
    return parse_section(name, {**load_parameters(conf_source, env)[name], **overrides})

"""How the project reads ``conf/``: the config loader class and its arguments, in one place.

``settings.py`` hands them to Kedro; :mod:`lors_distill.structure` builds a loader from them
outside a session. Kept apart from ``settings.py`` so that reading them imports no hooks.
"""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from lors_distill.resolvers import RESOLVERS

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
}

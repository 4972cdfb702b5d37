"""Kedro project settings."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from lors_distill.hooks import (
    PipelineStructureHook,
    ProcessSetupHook,
    RunChecksHook,
    TolerantMlflowHook,
    TrackingFaultsHook,
)
from lors_distill.resolvers import RESOLVERS

HOOKS = (
    PipelineStructureHook(),
    RunChecksHook(),
    ProcessSetupHook(),
    TrackingFaultsHook(),
    TolerantMlflowHook(),
)
# kedro-mlflow's own hook instance is replaced by TolerantMlflowHook (the same hook, with
# non-fatal uploads once the run is going)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # its metadata spells it either way

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

"""Kedro project settings."""

from lors_distill import config_loader as _loader
from lors_distill.hooks import (
    ClusterConfigHook,
    PipelineStructureHook,
    ProcessSetupHook,
    RunChecksHook,
    TolerantMlflowHook,
    TrackingFaultsHook,
)

HOOKS = (
    PipelineStructureHook(),
    RunChecksHook(),
    ProcessSetupHook(),
    TrackingFaultsHook(),
    ClusterConfigHook(),
    TolerantMlflowHook(),
)
# kedro-mlflow's own hook instance is replaced by TolerantMlflowHook (the same hook, with
# non-fatal uploads once the run is going)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # its metadata spells it either way

# the loader and its arguments (custom resolvers, soft merge of environments)
CONFIG_LOADER_CLASS = _loader.CONFIG_LOADER_CLASS
CONFIG_LOADER_ARGS = _loader.CONFIG_LOADER_ARGS

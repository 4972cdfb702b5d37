"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from lors_distill.hooks import ParameterValidationHook, PipelineStructureHook

HOOKS = (PipelineStructureHook(), ParameterValidationHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments (test, flickr8k, ...) override single keys without restating whole sections.
    "merge_strategy": {"parameters": "soft"},
}

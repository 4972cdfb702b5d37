"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from lors_distill.hooks import ParameterValidationHook, PipelineStructureHook
from lors_distill.resolvers import RESOLVERS

HOOKS = (PipelineStructureHook(), ParameterValidationHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments (test, flickr8k, ...) override single keys without restating whole sections.
    "merge_strategy": {"parameters": "soft"},
    # ${lors.choose:budget, ...}: the paper-scale environments' budget presets (conf/flickr30k)
    "custom_resolvers": RESOLVERS,
}

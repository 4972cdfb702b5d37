"""Project hooks."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from lors_distill.core.config import validate_parameters


class ParameterValidationHook:
    """Validate every parameter section into its typed object before any node runs.

    Kedro passes the merged parameters (all config files plus ``--params`` overrides) when it
    builds the catalog, which happens before the first node, so a wrong type or value stops the
    run at once with a message naming the parameter.
    """

    @hook_impl
    def after_catalog_created(self, parameters: dict[str, Any]) -> None:
        validate_parameters(parameters or {})

"""The base of every typed parameter object (:mod:`lors_distill.core.config` composes them).

A concept's parameters are declared once, next to the code that uses them (the ConvNet's shape
in :mod:`~lors_distill.core.models`, augmentation in :mod:`~lors_distill.core.augment`); the
configuration sections in :mod:`~lors_distill.core.config` are built from them. Core code takes
these objects as they are: no second class mirrors their fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen, validated parameters: an unknown key, a wrong type or a bad value is an error
    that names the key."""

    # inf and nan are no values for any parameter (a temperature of inf trains nothing, an
    # alpha of nan poisons the first iteration): rejected like a wrong type
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def updated(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


def as_logged(value: Any) -> Any:
    """``value`` as configuration writes it: a parameter object as the JSON mapping of the keys
    it was given (what MLflow logs), anything else unchanged."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


def one_of(value: str, names: Iterable[str]) -> str:
    """``value`` if it is one of ``names`` (a registry's keys), else a validation error."""
    names = list(names)
    if value not in names:
        raise ValueError(f"use one of {', '.join(names)}")
    return value

"""The base of every typed parameter object (:mod:`lors_distill.core.config` composes them).

A concept's parameters are declared once, next to the code that uses them (the ConvNet's shape
in :mod:`~lors_distill.core.models`, augmentation in :mod:`~lors_distill.core.augment`); the
configuration sections in :mod:`~lors_distill.core.config` are built from them. Core code takes
these objects as they are: no second class mirrors their fields.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


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


# A registry entry chosen in configuration: its name (``loss: kl``), or its name with keyword
# options for it (``loss: {name: kl, sharpness: 5.0}``). See :func:`choice`.
Choice = str | dict[str, Any]


def choice(value: Any, registry: Mapping[str, Callable[..., Any]]) -> Choice:
    """``value`` validated as a :data:`Choice` of ``registry``.

    The options of an entry are the keyword parameters (those with a default) of the function
    registered under its name, typed by its annotations; an option left out keeps the function's
    default, so a default lives only in the function's signature. A name stays a name, so a
    configuration that gives none dumps (and hashes) exactly as before options existed.

    Raises:
        ValueError: an unknown name, an unknown option or a bad option value, naming it.
    """
    if isinstance(value, str):
        return one_of(value, registry)
    if not isinstance(value, Mapping) or "name" not in value:
        raise ValueError(
            f"give a name (one of {', '.join(registry)}) or a mapping of 'name' and its options"
        )
    name = value["name"]
    if not isinstance(name, str):
        raise ValueError(f"name: use one of {', '.join(registry)}")
    one_of(name, registry)
    given = {key: option for key, option in value.items() if key != "name"}
    model = _options_of(registry[name])
    try:
        options = model.model_validate(given)
    except ValidationError as error:
        known = ", ".join(model.model_fields) or "none"
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"{problems} (the options of {name!r}: {known})") from None
    return {"name": name, **options.model_dump(mode="json", exclude_unset=True)}


def chosen(value: Choice, registry: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The function a validated :data:`Choice` names, with its options bound."""
    if isinstance(value, str):
        return registry[value]
    options = {key: option for key, option in value.items() if key != "name"}
    function = registry[value["name"]]
    return functools.partial(function, **options) if options else function


@functools.cache
def _options_of(function: Callable[..., Any]) -> type[Strict]:
    """A parameter model of ``function``'s keyword parameters (those with a default)."""
    hints = typing.get_type_hints(function, include_extras=True)
    fields = {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    label = getattr(function, "__name__", "entry")
    return create_model(f"{label}_options", __base__=Strict, **fields)

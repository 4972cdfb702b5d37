"""Custom OmegaConf resolvers for ``conf/`` (registered in ``config_loader.CONFIG_LOADER_ARGS``).

``lors.choose`` lets one command-line parameter pick a block of presets, e.g. in
``conf/flickr30k/parameters_distillation.yml``::

    _budget: ${runtime_params:budget, 100}          # kedro run --params budget=200
    _preset: ${lors.choose:budget, ${_budget}, ${_presets}}
    distillation:
      rank: ${_preset.rank}

Unlike a plain nested interpolation (``${_presets.${_budget}.rank}``), an unknown value fails
with a message that names the parameter and the values it can take.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def choose(name: str, value: Any, options: Mapping) -> Any:
    """The entry of ``options`` whose key equals ``value`` (compared as text, so ``200`` from
    ``--params budget=200`` matches a YAML key ``"200"``).

    Raises:
        ValueError: ``value`` is not a key of ``options``; the message names ``name`` and the
            allowed values.
    """
    table = {str(key): key for key in options}
    if str(value) not in table:
        raise ValueError(
            f"{name}={value!r} is not one of the values this environment defines: "
            f"{', '.join(table)} (kedro run --params {name}=<one of them>)"
        )
    return options[table[str(value)]]


RESOLVERS = {"lors.choose": choose}

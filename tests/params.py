"""Parameter sections as the project ships them (conf/base), for tests to tweak."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"


def base_params(env: str | None = None) -> dict:
    """All ``parameters_*.yml`` of ``conf/base``, deep-merged with ``conf/<env>`` if given."""
    params: dict = {}
    for folder in ["base"] + ([env] if env else []):
        for path in sorted((CONF / folder).glob("parameters_*.yml")):
            _merge(params, yaml.safe_load(path.read_text()) or {})
    return copy.deepcopy(params)


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value

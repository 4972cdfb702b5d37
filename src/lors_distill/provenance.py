"""What produced an expert trajectory, and whether a run may reuse it.

Every trajectory records the settings that shape it (the ``model`` section and the ``experts``
section without the keys that only say how many experts there are or where they run) and the
content hashes of the four bundles it was trained on. A run that reads trajectories it does not
write itself (``--only-missing-outputs``, or ``--pipelines distillation`` after a change) first
compares them with the current settings and data and stops, naming the expert and the keys,
instead of mixing experts trained differently.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from kedro.pipeline import Pipeline

from lors_distill.core.config import ExpertsParams, FrozenParams, ModelParams, ParameterError
from lors_distill.pipelines import BACKBONE

logger = logging.getLogger(__name__)

# keys of the experts section that do not change what one expert learns
_NOT_TRAJECTORY = {"num_experts", "device", "eval_batch_size"}
TRAINING_INPUTS = ("train_images", "train_text_features", "val_images", "val_text_features")
TRAJECTORY = re.compile(r"expert_(\d+)\.trajectory")
FROZEN_TRAJECTORY = re.compile(r"frozen\.expert_(\d+)\.trajectory")


class StaleExpertError(ParameterError):
    """Existing expert trajectories were trained with other settings or on other data."""


def trajectory_settings(
    model: ModelParams, experts: ExpertsParams, frozen: FrozenParams | None = None
) -> dict[str, Any]:
    """The settings one trajectory depends on, as plain JSON (with ``frozen``: a
    frozen-backbone expert's, whose backbone's content hash is one of its inputs)."""
    trained = experts.model_dump(mode="json")
    settings = {
        "model": model.model_dump(mode="json"),
        "experts": {k: v for k, v in trained.items() if k not in _NOT_TRAJECTORY},
    }
    if frozen is not None:
        settings["frozen"] = {"cache_features": frozen.cache_features}
    return settings


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def setting_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: recorded -> current`` for every setting that differs (dotted keys)."""
    old, new = _flatten(recorded), _flatten(current)
    return [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, "(unset)") != new.get(key, "(unset)")
    ]


def trajectory_problems(
    name: str,
    metadata: dict[str, Any],
    current: dict[str, Any],
    data_hashes: dict[str, str | None],
) -> list[str]:
    """Why the trajectory ``name`` (its bundle ``metadata``) does not fit the current settings
    and the current training data (``data_hashes``: input name -> content hash, where known)."""
    provenance = metadata.get("provenance")
    if provenance is None:
        return [f"{name}: records no settings (written by an older version of this project)"]
    problems = [
        f"{name}: trained with {difference}"
        for difference in setting_differences(provenance["settings"], current)
    ]
    for input_name, recorded in sorted(provenance.get("inputs", {}).items()):
        now = data_hashes.get(input_name)
        if recorded and now and recorded != now:
            problems.append(f"{name}: trained on another {input_name} (its content hash differs)")
    return problems


def raise_if_stale(problems: list[str]) -> None:
    if problems:
        raise StaleExpertError(
            "expert trajectories on disk do not match this run:\n  "
            + "\n  ".join(problems)
            + "\nretrain them: delete the files (data/06_models/experts, or "
            "data/06_models/frozen/experts for frozen.expert_<i>) or run the experts (or "
            "frozen) pipeline without --only-missing-outputs"
        )


# ------------------------------------------------------------------ what a run reuses


def _producer(pipeline: Pipeline, name: str):
    return next((node for node in pipeline.nodes if name in node.outputs), None)


def _missing(catalog, name: str) -> bool:
    """A persistent dataset that does not exist (Kedro's rule: a name the catalog does not hold,
    or an ephemeral dataset, is never missing)."""
    if name not in catalog or getattr(catalog.get(name), "_EPHEMERAL", False):
        return False
    return not catalog.exists(name)


def _skipped(node, catalog) -> bool:
    """``--only-missing-outputs`` skips a node with outputs that are all persistent and exist
    (nodes upstream of a running node that needs an ephemeral output run too: the runner adds
    them; this project persists every output)."""
    return bool(node.outputs) and not any(_missing(catalog, name) for name in node.outputs)


def reused(pipeline: Pipeline, catalog, only_missing: bool, name: str) -> bool:
    """True when this run reads ``name`` from disk as it is: an input no node of the run writes,
    or (with ``only_missing``) the output of a node that will be skipped."""
    producer = _producer(pipeline, name)
    if producer is None:
        return name in catalog and catalog.exists(name)
    return only_missing and _skipped(producer, catalog)


def check_reused_experts(
    pipeline: Pipeline, catalog, parsed: dict[str, Any], only_missing: bool
) -> None:
    """Stop before the first node when a trajectory this run reuses was trained with other
    settings or on other data than the run's (:class:`StaleExpertError`); the frozen-backbone
    experts' (``frozen.expert_<i>.trajectory``) also on another backbone."""
    if "model" not in parsed or "experts" not in parsed:
        return
    names = {name for node in pipeline.nodes for name in (*node.inputs, *node.outputs)}

    def known_hash(name: str) -> str | None:
        if name in catalog and reused(pipeline, catalog, only_missing, name):
            return catalog[name].stored_content_hash()
        return None

    hashes = {name: known_hash(name) for name in TRAINING_INPUTS}
    problems = []
    for pattern, frozen in ((TRAJECTORY, None), (FROZEN_TRAJECTORY, parsed.get("frozen"))):
        if pattern is FROZEN_TRAJECTORY and frozen is None:
            continue
        trajectories = sorted(
            (
                name
                for name in names
                if pattern.fullmatch(name) and reused(pipeline, catalog, only_missing, name)
            ),
            key=lambda name: int(pattern.fullmatch(name).group(1)),
        )
        if not trajectories:
            continue
        current = trajectory_settings(parsed["model"], parsed["experts"], frozen)
        inputs = {**hashes, "backbone": known_hash(BACKBONE)} if frozen is not None else hashes
        for name in trajectories:
            problems += trajectory_problems(name, catalog[name].read_metadata(), current, inputs)
    raise_if_stale(problems)


def remove_stale_outputs(pipeline: Pipeline, catalog) -> list[str]:
    """Under ``--only-missing-outputs``, a node whose outputs exist is skipped even when a node
    upstream of it runs again, so what it wrote would describe the old inputs (an experts
    summary of 2 experts when there are 3). Remove the outputs of every such node downstream of
    one that will run, so Kedro runs it again; returns the files removed."""
    running = [node for node in pipeline.nodes if not _skipped(node, catalog)]
    if not running:
        return []
    downstream = pipeline.from_nodes(*(node.name for node in running))
    removed = []
    for node in downstream.nodes:
        if node in running:
            continue
        for output in node.outputs:
            path = getattr(catalog[output], "_filepath", None) if output in catalog else None
            if path is None or not Path(str(path)).is_file():
                continue
            Path(str(path)).unlink()
            removed.append(str(path))
            logger.warning(
                "--only-missing-outputs: removed %s (%s runs again: a node upstream of it runs)",
                path,
                node.name,
            )
    return removed

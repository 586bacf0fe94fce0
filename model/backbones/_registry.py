"""Name -> constructor registry with the preprocessing attached to each name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from model.backbones._base import Backbone
from model.preprocess import PreprocessConfig

# "imagenet" asks for the backbone's standard pretrained weights, a path for a
# state dict file, None for random initialisation (tests).
Weights = str | Path | None
IMAGENET = "imagenet"

# A constructor builds the bare architecture; a locator finds the file of its
# standard pretrained weights or raises FileNotFoundError saying where it looked.
Constructor = Callable[[], Backbone]
WeightsLocator = Callable[[], Path]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    build: Constructor
    locate_imagenet_weights: WeightsLocator
    preprocess: PreprocessConfig
    weights_source: str  # where "imagenet" weights come from, for humans and checkpoints


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str, *, preprocess: PreprocessConfig, imagenet_weights: WeightsLocator, weights_source: str
) -> Callable[[Constructor], Constructor]:
    """Decorator: adding a backbone means writing one function that builds it."""

    def register(build: Constructor) -> Constructor:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneEntry(name, build, imagenet_weights, preprocess, weights_source)
        return build

    return register


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def backbone_entry(name: str) -> BackboneEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def create_backbone(name: str, weights: Weights = IMAGENET, input_size: int | None = None) -> Backbone:
    """Build a backbone by name, load its weights, attach its preprocessing.

    `input_size` rescales the registered preprocessing (e.g. 128 px for CPU
    training); the pixel scaling stays the backbone's own.
    """
    entry = backbone_entry(name)
    # Channels-last weights make convolutions (mkldnn, cuDNN) pick the faster
    # layout: a training step on the CPU takes about a third less time.
    backbone = entry.build().to(memory_format=torch.channels_last)
    backbone.name = name
    backbone.preprocess = entry.preprocess if input_size is None else entry.preprocess.resized(input_size)
    if weights == IMAGENET:
        backbone.load_weights(entry.locate_imagenet_weights())
    elif weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights for {name!r} not found at {path}")
        backbone.load_weights(path)
    return backbone

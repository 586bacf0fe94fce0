"""The contract every backbone honours, so training and serving code stay generic."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.preprocess import PreprocessConfig


class Backbone(nn.Module):
    """A CNN seen as an ordered list of stages ending in pooled features.

    Subclasses build their layers under the attribute names of their weight
    files (so state dicts load strictly) and say how those layers form stages.
    Stages let the trainer freeze a prefix of the network and cache its output.
    """

    # Dotted path of the ImageNet classifier module, which hashing replaces.
    classifier_path: str
    # Set by create_backbone from the registry (preprocess may then come from a checkpoint).
    name: str
    preprocess: PreprocessConfig

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        # The file the pretrained weights came from; None for random init.
        self.weights_file: Path | None = None

    def stages(self) -> list[nn.Module]:
        """Modules to apply in order; the last returns pooled features [B, F]."""
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        features = images
        for stage in self.stages():
            features = stage(features)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (until `reset_classifier`)."""
        return self.get_submodule(self.classifier_path)(self.forward_features(images))

    def reset_classifier(self) -> None:
        """Drop the ImageNet classifier: hashing needs only the features."""
        parent_path, _, child = self.classifier_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        setattr(parent, child, nn.Identity())

    def load_weights(self, path: Path) -> None:
        """Load a plain state dict strictly: a wrong or partial file must fail loudly."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(state, strict=True)
        self.weights_file = path

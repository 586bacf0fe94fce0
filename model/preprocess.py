"""How pixels become network inputs: one config, one eval transform.

The config travels from the backbone registry into every checkpoint, and the
same `preprocess_image` runs at training-time evaluation, offline evaluation
and serving, so the three can never drift apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

Transform = Callable[[Image.Image], torch.Tensor]

# Evaluation resizes the shorter side to input_size / CROP_FRACTION, then
# centre-crops input_size: the usual 224-of-256 ImageNet protocol at any size.
CROP_FRACTION = 0.875


@dataclass(frozen=True)
class PreprocessConfig:
    """Input size, resize/crop and pixel scaling a backbone expects.

    `mean` and `std` are in pixel units (0-255): ImageNet statistics are
    255 * (0.485, ...), and EfficientNet-Lite's (pixel - 127) / 128 is
    mean 127, std 128.
    """

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def resized(self, input_size: int) -> PreprocessConfig:
        """The same scaling at another input size, keeping the crop fraction."""
        return replace(self, input_size=input_size, resize_size=round(input_size / CROP_FRACTION))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            input_size=int(data["input_size"]),
            resize_size=int(data["resize_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data["interpolation"]),
        )


def _scale_pixels(image: Image.Image | torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    pixels = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return (pixels.float() - mean) / std


def preprocess_image(image: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """The deterministic eval transform: CHW float32 on the CPU.

    Pure function of its inputs (no shared state), hence safe to call from
    many threads at once.
    """
    interpolation = InterpolationMode(config.interpolation)
    rgb = image.convert("RGB")
    resized = F.resize(rgb, [config.resize_size], interpolation=interpolation, antialias=True)
    cropped = F.center_crop(resized, [config.input_size, config.input_size])
    return _scale_pixels(cropped, config)


def eval_transform(config: PreprocessConfig) -> Transform:
    return lambda image: preprocess_image(image, config)


def train_transform(config: PreprocessConfig, augment: bool) -> Transform:
    """Random resized crop and horizontal flip when `augment`, else the eval transform."""
    if not augment:
        return eval_transform(config)
    interpolation = InterpolationMode(config.interpolation)
    augmentation = v2.Compose(
        [
            v2.RandomResizedCrop(config.input_size, scale=(0.5, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    return lambda image: _scale_pixels(augmentation(image.convert("RGB")), config)

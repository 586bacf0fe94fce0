"""The HashNet network: a backbone, a linear hash layer, and the training activations."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from model.backbones import Backbone
from model.codes import sign_codes

HASH_LAYER_INIT_STD = 0.01

# Maps hash-layer outputs z and the current beta to the relaxed codes the loss sees.
Activation = Callable[[torch.Tensor, float], torch.Tensor]


def tanh_continuation(z: torch.Tensor, beta: float) -> torch.Tensor:
    """tanh(beta * z): approaches sign(z) as beta grows (the paper's continuation)."""
    return torch.tanh(beta * z)


def sign_straight_through(z: torch.Tensor, beta: float) -> torch.Tensor:
    """The "sign at training" ablation: forward exactly sign(z) (0 -> +1),
    backward the gradient of tanh(beta * z), since sign's own is zero almost
    everywhere."""
    relaxed = torch.tanh(beta * z)
    return relaxed + (sign_codes(z) - relaxed).detach()


ACTIVATIONS: dict[str, Activation] = {"tanh": tanh_continuation, "sign": sign_straight_through}


def check_bits(bits: int) -> None:
    if not (8 <= bits <= 1024 and bits % 8 == 0):
        raise ValueError(f"bits must be a multiple of 8 between 8 and 1024, got {bits}")


class HashNet(nn.Module):
    """Backbone features -> K hash-layer outputs z. Codes are sign(z) at inference;
    during training an `Activation` relaxes them."""

    def __init__(self, backbone: Backbone, bits: int) -> None:
        super().__init__()
        check_bits(bits)
        backbone.reset_classifier()
        self.backbone = backbone
        self.bits = bits
        self.hash_layer = nn.Linear(backbone.num_features, bits)
        nn.init.normal_(self.hash_layer.weight, std=HASH_LAYER_INIT_STD)
        nn.init.zeros_(self.hash_layer.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.hash_layer(self.backbone.forward_features(images))

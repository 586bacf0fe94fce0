"""CutMix (Yun et al., ICCV 2019) for the classification warm-up.

A backbone fine-tuned on a few thousand images memorises them: on CIFAR-10's
5,000, 20 epochs of softmax end at training accuracy 0.985 and 30 epochs
classify fewer queries right than 20. Pasting a box of another image into
each image, with the targets mixed by the box's area, keeps the training
images from being learnt by heart.

The draws depend only on (seed, iteration), so a resumed run mixes its
batches exactly as a straight one does.
"""
from __future__ import annotations

import math

import numpy as np
import torch

MIX_SEED_STRIDE = 1_000_003


def cut_and_mix(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, seed: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one random box from a shuffled copy of the batch into `inputs` [B, C, H, W];
    `targets` [B, classes] mix by the share of each image the box covers.

    The box's share is drawn from Beta(alpha, alpha) and clipped at the borders.
    """
    if alpha <= 0:
        raise ValueError(f"CutMix needs alpha > 0, got {alpha}")
    if inputs.ndim != 4:
        raise ValueError(f"CutMix pastes boxes into images or feature maps [B, C, H, W], got shape {tuple(inputs.shape)}")
    rng = np.random.default_rng(seed * MIX_SEED_STRIDE + iteration)
    height, width = inputs.shape[-2:]
    side = math.sqrt(1.0 - rng.beta(alpha, alpha))
    centre_y, centre_x = rng.integers(height), rng.integers(width)
    half_h, half_w = int(height * side) // 2, int(width * side) // 2
    top, bottom = max(centre_y - half_h, 0), min(centre_y + half_h, height)
    left, right = max(centre_x - half_w, 0), min(centre_x + half_w, width)
    partner = torch.from_numpy(rng.permutation(len(inputs))).to(inputs.device)

    mixed = inputs.clone()
    mixed[..., top:bottom, left:right] = inputs[partner][..., top:bottom, left:right]
    pasted = (bottom - top) * (right - left) / (height * width)
    return mixed, (1.0 - pasted) * targets + pasted * targets[partner]

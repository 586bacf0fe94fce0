"""HashNet's weighted maximum-likelihood pairwise loss.

For a pair (i, j) with similarity s_ij (1 when the images share a label) and
relaxed codes h, p(s_ij = 1) = sigmoid(alpha * <h_i, h_j>), so the negative
log-likelihood is softplus(alpha * ip) - s_ij * alpha * ip. Each pair is
weighted (class balance by default) and the weighted losses are averaged over
the pairs of the mini-batch. Pairs are ordered, with i != j: a code is always
similar to itself, so self-pairs carry no information and would dilute the
similar set.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

# Maps the similarity matrix s (0/1 floats) of the pairs to their weights.
PairWeighting = Callable[[torch.Tensor], torch.Tensor]


def class_balanced_weights(similar: torch.Tensor) -> torch.Tensor:
    """|S| / |S1| for similar pairs and |S| / |S0| for dissimilar ones, so
    both sets count equally however rare similar pairs are."""
    total = similar.numel()
    n_similar = similar.sum()
    n_dissimilar = total - n_similar
    # A batch without one of the two sets leaves that weight unused; clamp avoids 0/0.
    return torch.where(similar > 0, total / n_similar.clamp_min(1), total / n_dissimilar.clamp_min(1))


def uniform_weights(similar: torch.Tensor) -> torch.Tensor:
    """The "no weighting" ablation."""
    return torch.ones_like(similar)


def pairwise_similarity(labels: torch.Tensor) -> torch.Tensor:
    """s_ij = 1 when multi-hot label rows i and j share at least one label."""
    labels = labels.float()
    return (labels @ labels.T > 0).float()


class PairwiseLikelihoodLoss(nn.Module):
    """Weighted pairwise negative log-likelihood over a batch of relaxed codes.

    `alpha=None` uses the paper's 10 / K for K-bit codes.
    """

    def __init__(self, alpha: float | None = None, weighting: PairWeighting = class_balanced_weights) -> None:
        super().__init__()
        self.alpha = alpha
        self.weighting = weighting

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if codes.shape[0] != labels.shape[0] or codes.shape[0] < 2:
            raise ValueError(f"need >= 2 codes with one label row each, got {codes.shape[0]} codes and {labels.shape[0]} labels")
        alpha = self.alpha if self.alpha is not None else 10.0 / codes.shape[1]
        off_diagonal = ~torch.eye(codes.shape[0], dtype=torch.bool, device=codes.device)
        inner = alpha * (codes @ codes.T)[off_diagonal]
        similar = pairwise_similarity(labels)[off_diagonal]
        weights = self.weighting(similar)
        return (weights * (F.softplus(inner) - similar * inner)).mean()

"""The pairwise likelihood loss against values worked out with plain Python math."""
import math

import pytest
import torch

from model.loss import PairwiseLikelihoodLoss, class_balanced_weights, pairwise_similarity, uniform_weights


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Three 2-bit codes; images 0 and 1 share label 0, image 2 has label 1 only... and
# image 1 also carries label 1, so it is similar to both others (multi-label).
CODES = [[1.0, 0.5], [0.5, -1.0], [-1.0, -1.0]]
LABELS = [[1, 0], [1, 1], [0, 1]]
ALPHA = 0.5


def hand_loss(weighted: bool) -> float:
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    similar = {(i, j): float(any(a and b for a, b in zip(LABELS[i], LABELS[j]))) for i, j in pairs}
    n_similar = sum(similar.values())
    n_dissimilar = len(pairs) - n_similar
    total = 0.0
    for i, j in pairs:
        inner = ALPHA * sum(a * b for a, b in zip(CODES[i], CODES[j]))
        weight = 1.0
        if weighted:
            weight = len(pairs) / n_similar if similar[i, j] else len(pairs) / n_dissimilar
        total += weight * (softplus(inner) - similar[i, j] * inner)
    return total / len(pairs)


@pytest.mark.parametrize("weighted", [True, False])
def test_loss_matches_hand_computation(weighted):
    loss = PairwiseLikelihoodLoss(alpha=ALPHA, weighting=class_balanced_weights if weighted else uniform_weights)
    value = loss(torch.tensor(CODES, dtype=torch.float64), torch.tensor(LABELS))
    assert value.item() == pytest.approx(hand_loss(weighted), rel=1e-12)


def test_weighted_differs_from_unweighted():
    assert hand_loss(True) != pytest.approx(hand_loss(False))


def test_default_alpha_is_ten_over_bits():
    codes = torch.tensor([[1.0] * 16, [-1.0] * 8 + [1.0] * 8])
    labels = torch.tensor([[1, 0], [0, 1]])
    # Dissimilar pair with <h_i, h_j> = 0: each ordered pair costs softplus(0) = log 2 (weight 2/2 = 1).
    assert PairwiseLikelihoodLoss()(codes, labels).item() == pytest.approx(math.log(2))
    codes[1] = 1.0  # now <h_i, h_j> = 16 and alpha * 16 = 10
    assert PairwiseLikelihoodLoss()(codes, labels).item() == pytest.approx(softplus(10.0))


def test_similarity_is_shared_label():
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert pairwise_similarity(labels).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_large_inner_products_stay_finite():
    codes = torch.tensor([[1000.0], [1000.0], [-1000.0]], requires_grad=True)
    value = PairwiseLikelihoodLoss(alpha=1.0)(codes, torch.tensor([[1, 0], [0, 1], [1, 0]]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(codes.grad).all()


def test_batch_of_one_class_has_no_dissimilar_pairs():
    codes = torch.ones(4, 8, dtype=torch.float64)
    value = PairwiseLikelihoodLoss()(codes, torch.ones(4, 1))
    assert value.item() == pytest.approx(softplus(10.0) - 10.0)

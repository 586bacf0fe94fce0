"""The learning-rate schedule that every training stage applies to its optimizer."""
import pytest
import torch
from torch import nn

from model.train_parts import NEW_LAYER_LR_MULTIPLIER, build_optimizer, schedule_learning_rates


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return build_optimizer("adam", 0.0, nn.Linear(4, 2), nn.Sequential(nn.Linear(3, 4)), lr)


def test_constant_schedule_keeps_each_groups_initial_rate():
    optimizer = _optimizer(1e-3)
    schedule_learning_rates(optimizer, "constant", iteration=50, total=100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3 * NEW_LAYER_LR_MULTIPLIER, 1e-3])


def test_cosine_schedule_halves_at_the_midpoint_and_ends_at_zero():
    optimizer = _optimizer(1e-3)
    schedule_learning_rates(optimizer, "cosine", iteration=50, total=100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-3, 5e-4])
    schedule_learning_rates(optimizer, "cosine", iteration=100, total=100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.0, 0.0], abs=1e-12)

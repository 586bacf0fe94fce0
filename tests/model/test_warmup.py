"""The warm-up's accuracy count, for plain, multi-label and CutMix-blended targets."""
import torch

from model.warmup import count_correct


def test_a_multi_hot_row_counts_when_its_top_class_is_any_of_its_labels():
    logits = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    assert count_correct(logits, labels) == 2


def test_a_blend_counts_for_the_class_holding_the_larger_share():
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    blended = torch.tensor([[0.3, 0.7, 0.0], [0.7, 0.3, 0.0], [0.5, 0.0, 0.5]])
    assert count_correct(logits, blended) == 2  # row 0 predicts the smaller share; a tie counts either class


def test_a_row_without_labels_is_never_right():
    assert count_correct(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])) == 0

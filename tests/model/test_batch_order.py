"""The epoch order: a deterministic permutation, optionally in runs of one class."""
import numpy as np
import pytest
import torch

from model.batch_order import epoch_order, remaining_batches
from model.train_config import TrainConfig


def _one_hot(classes: list[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.uint8)[classes]


def test_plain_shuffle_is_a_seeded_permutation():
    labels = _one_hot([0, 1, 2] * 10, 3)
    order = epoch_order(labels, seed=3, epoch=2)
    assert sorted(order.tolist()) == list(range(30))
    assert torch.equal(order, torch.randperm(30, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)))
    assert not torch.equal(order, epoch_order(labels, seed=3, epoch=3))


def test_runs_of_one_class_give_every_image_partners_in_its_batch():
    rng = np.random.default_rng(0)
    labels = _one_hot(rng.permutation(np.repeat(np.arange(20), 8)).tolist(), 20)  # 20 classes x 8 images
    order = epoch_order(labels, seed=0, epoch=0, per_class=4)
    assert sorted(order.tolist()) == list(range(160))
    classes = labels.argmax(axis=1)[order.numpy()]
    assert all(len(set(classes[i : i + 4])) == 1 for i in range(0, 160, 4))
    # Batches of 16 from a plain shuffle leave most images without a partner; from runs of 4, none.
    assert all(np.bincount(classes[i : i + 16]).max() >= 4 for i in range(0, 160, 16))
    assert torch.equal(order, epoch_order(labels, seed=0, epoch=0, per_class=4))
    assert not torch.equal(order, epoch_order(labels, seed=0, epoch=1, per_class=4))


def test_uneven_classes_still_visit_every_image_once():
    labels = _one_hot([0] * 7 + [1] * 2 + [2] * 5, 3)
    order = epoch_order(labels, seed=1, epoch=0, per_class=3)
    assert sorted(order.tolist()) == list(range(14))
    positions = {index: position for position, index in enumerate(order.tolist())}
    assert abs(positions[7] - positions[8]) == 1  # class 1's two images form one run


def test_multi_label_rows_group_by_their_first_label():
    labels = _one_hot([0, 0, 0, 2, 2, 2], 3)
    labels[0, 2] = 1  # labels 0 and 2: grouped with class 0
    order = epoch_order(labels, seed=0, epoch=0, per_class=3).tolist()
    assert sorted(order[:3]) in ([0, 1, 2], [3, 4, 5]) and sorted(order[3:]) in ([0, 1, 2], [3, 4, 5])


def test_per_class_is_checked():
    with pytest.raises(ValueError, match="per_class"):
        epoch_order(_one_hot([0, 1], 2), seed=0, epoch=0, per_class=0)
    with pytest.raises(ValueError, match="per_class"):
        TrainConfig(data="grocery", out="runs/x", batch_size=8, per_class=9)


def test_remaining_batches_skip_the_ones_run_and_drop_the_ragged_tail():
    order = torch.arange(10)
    assert [b.tolist() for b in remaining_batches(order, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [b.tolist() for b in remaining_batches(order, 3, first_batch=2)] == [[6, 7, 8]]
    assert remaining_batches(order, 3, first_batch=3) == []

"""The order in which an epoch visits the training images; batches are consecutive slices of it.

HashNet learns from the similar pairs inside a batch. With many classes a
shuffled batch holds hardly any (grocery: 81 classes, so a batch of 64 gives
an image about 0.8 similar partners), and the class-balance weight then rests
on a handful of pairs. Grouping the order into runs of `per_class` images of
one class guarantees each image per_class - 1 similar partners in its batch,
whatever the number of classes (the P x K sampling of metric learning).
"""
from __future__ import annotations

import numpy as np
import torch

ORDER_SEED_STRIDE = 1_000_003


def epoch_order(labels: np.ndarray, seed: int, epoch: int, per_class: int = 1) -> torch.Tensor:
    """A permutation of the images that depends only on (labels, seed, epoch, per_class),
    so a resumed run sees the same batches.

    per_class 1 is a plain shuffle. Otherwise each class's images (by their first
    label, for multi-label rows) are shuffled and cut into runs of per_class
    (the last run of a class may be shorter), and the runs are shuffled.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed * ORDER_SEED_STRIDE + epoch)
    if per_class == 1:
        return torch.randperm(len(labels), generator=generator)
    first_label = np.asarray(labels).argmax(axis=1)
    runs: list[torch.Tensor] = []
    for label in np.unique(first_label):
        members = torch.from_numpy(np.flatnonzero(first_label == label))
        runs.extend(members[torch.randperm(len(members), generator=generator)].split(per_class))
    return torch.cat([runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()])


def remaining_batches(order: torch.Tensor, batch_size: int, first_batch: int = 0) -> list[torch.Tensor]:
    """The epoch's full batches from `first_batch` on: a resumed epoch skips those it
    ran, and a ragged tail is left out so every batch has the same size."""
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(first_batch, len(order) // batch_size)]

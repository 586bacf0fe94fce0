"""CutMix for the warm-up: boxes pasted from partners, targets mixed by the pasted share, seeded by iteration."""
import numpy as np
import pytest
import torch

from model.cutmix import cut_and_mix


def _batch(size: int = 8, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i, so every pixel says which image it came from."""
    images = torch.arange(size, dtype=torch.float32).view(size, 1, 1, 1).expand(size, 3, side, side).contiguous()
    return images, torch.eye(size)


@pytest.mark.parametrize("iteration", range(20))
def test_targets_mix_by_the_share_of_pixels_pasted_from_one_partner(iteration):
    images, targets = _batch()
    mixed, mixed_targets = cut_and_mix(images, targets, alpha=1.0, seed=3, iteration=iteration)
    assert torch.allclose(mixed_targets.sum(dim=1), torch.ones(len(images)))
    for i, image in enumerate(mixed):
        sources, counts = np.unique(image.numpy(), return_counts=True)
        foreign = {int(s): c / image.numel() for s, c in zip(sources, counts) if s != i}
        assert len(foreign) <= 1, "one box, from one partner"
        expected = torch.zeros(len(images))
        expected[i] = 1.0 - sum(foreign.values())
        for partner, share in foreign.items():
            expected[partner] = share
        if not foreign:
            # The box may be empty, or pasted from the image itself: then the target stays the image's own.
            expected[i] = 1.0
        assert torch.allclose(mixed_targets[i], expected, atol=1e-6)


def test_some_boxes_are_pasted_and_the_inputs_are_left_alone():
    images, targets = _batch()
    before = images.clone()
    changed = [not torch.equal(cut_and_mix(images, targets, 1.0, 0, i)[0], images) for i in range(10)]
    assert sum(changed) >= 8
    assert torch.equal(images, before)


def test_draws_depend_only_on_seed_and_iteration():
    images, targets = _batch()
    first = cut_and_mix(images, targets, 1.0, seed=1, iteration=7)
    again = cut_and_mix(images, targets, 1.0, seed=1, iteration=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    others = [cut_and_mix(images, targets, 1.0, seed=1, iteration=i)[1] for i in range(8, 12)]
    assert any(not torch.equal(first[1], other) for other in others)


def test_bad_arguments_are_refused():
    images, targets = _batch()
    with pytest.raises(ValueError, match="alpha"):
        cut_and_mix(images, targets, 0.0, 0, 0)
    with pytest.raises(ValueError, match="feature maps"):
        cut_and_mix(torch.ones(4, 10), torch.eye(4), 1.0, 0, 0)

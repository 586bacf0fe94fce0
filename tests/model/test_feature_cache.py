"""Cached prefix outputs of real images: what evaluation would compute, computed once, never stale."""
import numpy as np
import pytest
import torch
from torch import nn

from model.backbones import create_backbone
from model.data import grocery, load_image
from model.feature_cache import cached_outputs
from model.preprocess import preprocess_image

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def images(shared_data):
    return grocery(shared_data / "grocery", "train").subset(range(0, 400, 50))


@pytest.fixture
def backbone():
    return create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE)


@pytest.fixture
def prefix(backbone):
    return nn.Sequential(*backbone.stages()[:2])


def _outputs(prefix, images, cache_dir, preprocess) -> np.ndarray:
    return np.array(cached_outputs(prefix, "lite0[:2]", preprocess, images, cache_dir, device="cpu", batch_size=3, workers=0))


def test_the_cache_holds_the_prefix_of_each_eval_preprocessed_image(backbone, prefix, images, tmp_path):
    preprocess = backbone.preprocess
    cached = _outputs(prefix, images, tmp_path, preprocess)
    batch = torch.stack([preprocess_image(load_image(path), preprocess) for path in images.paths])
    with torch.inference_mode():
        direct = prefix.eval()(batch).numpy()
    assert cached.shape == direct.shape and np.allclose(cached, direct, atol=1e-5)
    assert [path.name for path in tmp_path.iterdir()] == [next(tmp_path.glob("*.npy")).name]  # no temporary left


def test_a_second_call_reads_the_file_and_other_weights_or_sizes_get_their_own(backbone, prefix, images, tmp_path):
    preprocess = backbone.preprocess
    first = _outputs(prefix, images, tmp_path, preprocess)
    (cache_file,) = tmp_path.glob("*.npy")
    np.save(cache_file, np.zeros_like(first))  # a read, not a recomputation, returns what the file holds
    assert not _outputs(prefix, images, tmp_path, preprocess).any()

    with torch.no_grad():
        prefix[0][0].weight.mul_(2.0)
    _outputs(prefix, images, tmp_path, preprocess)
    _outputs(prefix, images, tmp_path, preprocess.resized(IMAGE_SIZE + 32))
    assert len(list(tmp_path.glob("*.npy"))) == 3

"""The encoder the service uses: packed codes from images, consistent across its entry points."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from model.backbones import create_backbone
from model.checkpoint import HEAD_ONLY, save_checkpoint
from model.encoder import Encoder, codes_from_logits, default_device
from model.hashnet import HashNet


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    model = HashNet(create_backbone("efficientnet_lite0", input_size=64), 48)
    path = tmp_path_factory.mktemp("encoder") / "ckpt.safetensors"
    save_checkpoint(path, model, kind=HEAD_ONLY, label_names=["x"], training={})
    return Encoder.from_checkpoint(path)


def _images(count):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)) for _ in range(count)]


def test_interface(encoder):
    assert encoder.bits == 48 and encoder.device == default_device()
    assert encoder.preprocess.input_size == 64 and encoder.label_names == ["x"]


def test_encode_images_matches_encode_tensors(encoder):
    images = _images(5)
    codes = encoder.encode_images(images, batch_size=2)
    assert codes.dtype == np.uint8 and codes.shape == (5, 6)
    batch = torch.stack([encoder.preprocess_image(image) for image in images])
    assert np.array_equal(codes, encoder.encode_tensors(batch))
    assert encoder.encode_images([]).shape == (0, 6)


def test_codes_are_sign_of_hash_layer_outputs(encoder):
    batch = torch.stack([encoder.preprocess_image(image) for image in _images(3)])
    with torch.inference_mode():
        features = torch.from_numpy(encoder.features(batch))
        logits = encoder._model.hash_layer(features)
    assert features.shape == (3, 1280)
    assert np.array_equal(encoder.encode_tensors(batch), codes_from_logits(logits))


def test_preprocessing_is_thread_safe(encoder):
    images = _images(8)
    expected = [encoder.preprocess_image(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(encoder.preprocess_image, images * 3))
    assert all(torch.equal(result, expected[i % 8]) for i, result in enumerate(results))


def test_wrong_shape_is_refused(encoder):
    with pytest.raises(ValueError, match="expected a batch"):
        encoder.encode_tensors(torch.zeros(3, 64, 64))

"""The network: hash layer initialisation and gradients reaching every trained part."""
import pytest
import torch

from model.backbones import create_backbone
from model.hashnet import HashNet, check_bits
from model.loss import PairwiseLikelihoodLoss


@pytest.fixture(scope="module")
def lite0_random():
    torch.manual_seed(0)
    return HashNet(create_backbone("efficientnet_lite0", weights=None, input_size=64), 64)


def test_hash_layer_init_follows_the_paper(lite0_random):
    weight, bias = lite0_random.hash_layer.weight, lite0_random.hash_layer.bias
    assert weight.shape == (64, 1280)
    assert weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(weight.mean().item()) < 1e-3
    assert torch.count_nonzero(bias) == 0


def test_gradients_reach_backbone_and_hash_layer(lite0_random):
    model = lite0_random.train()
    images = torch.randn(6, 3, 64, 64)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [0, 1]])
    PairwiseLikelihoodLoss()(torch.tanh(model(images)), labels).backward()
    assert model.hash_layer.weight.grad.abs().sum() > 0
    assert model.backbone._conv_stem.weight.grad.abs().sum() > 0
    assert model.backbone._blocks[-1]._project_conv.weight.grad.abs().sum() > 0


def test_classifier_is_dropped(lite0_random):
    assert not any(name.startswith("backbone._fc") for name in lite0_random.state_dict())


@pytest.mark.parametrize("bits", [16, 32, 48, 64, 8, 1024])
def test_supported_code_lengths(bits):
    check_bits(bits)


@pytest.mark.parametrize("bits", [0, 12, 1032])
def test_unsupported_code_lengths(bits):
    with pytest.raises(ValueError):
        check_bits(bits)

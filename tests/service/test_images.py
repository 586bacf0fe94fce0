"""Safe decoding on its own: the allow-list, full loads, and the byte and pixel caps."""
from __future__ import annotations


import pytest
from PIL import Image

from service.images import ImageRejected, configure_pillow, decode_image
from tests.conftest import encoded

MAX_BYTES = 1 << 20
MAX_PIXELS = 1_000_000


@pytest.fixture(autouse=True, scope="module")
def pillow_policy():
    before = Image.MAX_IMAGE_PIXELS
    configure_pillow(MAX_PIXELS)
    yield
    Image.MAX_IMAGE_PIXELS = before


def decode(data: bytes) -> Image.Image:
    return decode_image(data, MAX_BYTES, MAX_PIXELS)


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode(data)
    return caught.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_accepted_formats_decode_to_rgb(fmt):
    image = decode(encoded(Image.new("RGB", (40, 30), (200, 30, 10)), fmt))
    assert image.mode == "RGB" and image.size == (40, 30)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data).getpixel((0, 0)) == (255, 0, 0)


def test_transparent_and_grey_images_become_rgb():
    for mode in ("RGBA", "LA", "L", "P"):
        assert decode(encoded(Image.new(mode, (8, 8)), "PNG")).mode == "RGB"


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM"])
def test_other_formats_are_named_and_refused(fmt):
    error = rejected(encoded(Image.new("RGB", (16, 16)), fmt))
    assert (error.status, error.code) == (415, "unsupported_image") and fmt in error.detail


def test_bytes_that_are_no_image():
    error = rejected(b"%PDF-1.7 definitely not pixels")
    assert (error.status, error.code) == (415, "unsupported_image") and "not a recognised image" in error.detail


def test_truncated_files_are_never_half_loaded(shared_data):
    jpeg = next((shared_data / "grocery" / "dataset" / "test").rglob("*.jpg")).read_bytes()
    png = encoded(Image.effect_noise((64, 64), 40).convert("RGB"), "PNG")
    for data in (jpeg[: len(jpeg) // 3], jpeg[:-50], png[:-30], png[: len(png) // 2]):
        error = rejected(data)
        assert (error.status, error.code) == (400, "corrupt_image")


def test_empty_and_oversize_files():
    assert rejected(b"").code == "empty_image"
    error = rejected(bytes(MAX_BYTES + 1))
    assert (error.status, error.code) == (413, "image_too_large") and str(MAX_BYTES) in error.detail


@pytest.mark.parametrize("size", [(1100, 1000), (2100, 1000)])
def test_decompression_bombs(size):
    # Over the cap (Pillow warns: treated as an error) and over twice the cap (Pillow refuses).
    error = rejected(encoded(Image.new("L", size), "PNG"))
    assert (error.status, error.code) == (413, "too_many_pixels") and "pixels" in error.detail

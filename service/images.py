"""Untrusted bytes to pixels: a format allow-list, full decoding and caps on size and pixels.

Pillow's decompression-bomb warning becomes an error (and the pixel cap is
also checked here, from the header, since warning filters are process-wide
and other code may reset them), and truncated files are never half-loaded
(LOAD_TRUNCATED_IMAGES stays False): every image that passes here was
decoded completely.
"""
from __future__ import annotations

import io
import re
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

from service.errors import ApiError

# GIF and WebP may be animated: the first frame is the image.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageRejected(ApiError):
    """An upload that is not an acceptable image; the message says why."""


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow policy: pixel cap, bomb warnings as errors, no truncated loads."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """A fully decoded RGB image, or ImageRejected naming the problem."""
    if not data:
        raise ImageRejected(400, "empty_image", "the image file is empty")
    if len(data) > max_bytes:
        raise ImageRejected(413, "image_too_large", f"the image file is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
            probe.verify()  # checksums and structure (PNG chunks, ...) before any pixel is trusted
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(413, "too_many_pixels", f"the image is {width}x{height} = {width * height} pixels; "
                                                        f"the limit is {max_pixels}")
        image.load()
        return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's message quotes its own threshold (twice ours for errors), not the limit that applies
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{size.group(1)} pixels" if size else "more pixels than that"
        raise ImageRejected(413, "too_many_pixels", f"the image is {pixels}; the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        raise ImageRejected(415, "unsupported_image", _unsupported_message(data)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncation and corrupt streams as these.
        raise ImageRejected(400, "corrupt_image", f"the image is truncated or corrupt: {exc}") from None


def _unsupported_message(data: bytes) -> str:
    accepted = ", ".join(ALLOWED_FORMATS)
    try:
        # Only the header is parsed, to name the format in the message.
        with Image.open(io.BytesIO(data)) as other:
            return f"image format {other.format} is not accepted; accepted formats: {accepted}"
    except Exception:  # noqa: BLE001 - any failure here just means "not an image"
        return f"the file is not a recognised image; accepted formats: {accepted}"

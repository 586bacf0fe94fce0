"""Fixtures shared by every test package: where the real data lives, a free port, images as file bytes."""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The read-only data sets (CIFAR-10, grocery); DEEPHASH_DATA_DIR overrides ../shared/data."""
    return Path(os.environ.get("DEEPHASH_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_dir()
    if not (root / "grocery").is_dir() or not (root / "cifar10").is_dir():
        pytest.skip(f"real data not found at {root}: set DEEPHASH_DATA_DIR to the folder holding grocery/ and cifar10/")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes of `image` saved as a `fmt` file (Pillow's format name and save options)."""
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()

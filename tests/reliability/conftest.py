"""Fixtures of the reliability tests: real servers with small limits and a catalogue root to escape from.

The service tests' fixtures (the checkpoint, `make_server`, grocery images)
are reused as they are; the servers here only differ in their settings.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.index.conftest import redis_server
from tests.service.conftest import LIMITS, catalogue_images, checkpoint, make_server
from tests.service.servers import API_KEY, AUTH, Server, copy_images, grocery_images

__all__ = ["API_KEY", "AUTH", "catalogue_images", "checkpoint", "make_server", "redis_server"]

# The service tests' small limits without the API key: the fuzzer reaches POST /index and DELETE.
OPEN_LIMITS = {name: value for name, value in LIMITS.items() if name != "DEEPHASH_API_KEY"}
# POST /index bodies over this are refused (the service tests' limits leave it at 256 MiB).
MAX_INDEX_BYTES = 32 << 20
# A file outside every catalogue root that a symlink inside one points at: it must never be served.
OUTSIDE_SECRET = b"a file outside the catalogue root"


@pytest.fixture(scope="session")
def guarded(tmp_path_factory, checkpoint: Path, shared_data: Path) -> Server:
    """One server with an API key and the service tests' small limits, serving a sample catalogue
    whose folder also holds a symlink to a file outside it."""
    workdir = tmp_path_factory.mktemp("guarded")
    shelf = copy_images(grocery_images(shared_data, "train", ["Lemon"], 2), workdir / "shelf")
    (workdir / "secret.txt").write_bytes(OUTSIDE_SECRET)
    (shelf / "escape.jpg").symlink_to(workdir / "secret.txt")
    server = Server(workdir, {"DEEPHASH_CHECKPOINT": str(checkpoint), "DEEPHASH_DATA_DIR": str(workdir),
                              "DEEPHASH_SAMPLE_CATALOGUE": "shelf",
                              "DEEPHASH_MAX_INDEX_BYTES": str(MAX_INDEX_BYTES), **LIMITS})
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="session")
def open_server(tmp_path_factory, checkpoint: Path) -> Server:
    """A server with the small limits and no API key."""
    server = Server(tmp_path_factory.mktemp("open"), {"DEEPHASH_CHECKPOINT": str(checkpoint), **OPEN_LIMITS})
    try:
        yield server.start()
    finally:
        server.close()

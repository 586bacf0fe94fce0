"""Fixtures of the service tests: real servers (uvicorn in a subprocess) over real images and a real Redis.

Tests that need the encoder skip, with the reason, while the checkpoint the
settings point at (DEEPHASH_CHECKPOINT, default model/default) is missing.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from service.settings import Settings
from tests.conftest import REPO_ROOT
from tests.service.servers import API_KEY, AUTH, GroceryImage, Server, copy_images, files, grocery_images, poll_job

REDIS_URL = "redis://127.0.0.1:6379/0"

# Four visually distinct fine classes of the grocery test split, six images each.
CLASSES = ["Banana", "Watermelon", "Oatly-Oat-Milk", "Carrots"]
PER_CLASS = 6
# The part of the catalogue indexed in one synchronous request; the rest goes as a job.
SYNC_PART = 10

# The shared server's limits: small, so the tests can cross them cheaply.
LIMITS = {"DEEPHASH_MAX_UPLOAD_BYTES": str(1 << 20), "DEEPHASH_MAX_IMAGE_PIXELS": "1000000",
          "DEEPHASH_MAX_INDEX_ITEMS": "40", "DEEPHASH_ASYNC_INDEX_THRESHOLD": "12", "DEEPHASH_QUEUE_SIZE": "12",
          "DEEPHASH_BATCH_SIZE": "8", "DEEPHASH_MAX_K": "50", "DEEPHASH_API_KEY": API_KEY}


@pytest.fixture(scope="session")
def checkpoint() -> Path:
    checkpoint = Settings().checkpoint
    if not (REPO_ROOT / "model" / "encoder.py").is_file():
        pytest.skip("model/encoder.py is not there yet: the service tests need the encoder")
    if not checkpoint.exists():
        pytest.skip(f"checkpoint {checkpoint} is not there yet (DEEPHASH_CHECKPOINT can point at another)")
    return checkpoint


@pytest.fixture
def make_server(tmp_path: Path, checkpoint: Path):
    """Build (and by default start) servers for one test; all are stopped at its end."""
    servers: list[Server] = []

    def make(workdir: Path = tmp_path, start: bool = True, **env: str) -> Server:
        server = Server(workdir, {"DEEPHASH_CHECKPOINT": str(checkpoint), **env})
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def catalogue_images(shared_data: Path) -> list[GroceryImage]:
    return grocery_images(shared_data, "test", CLASSES, PER_CLASS)


@pytest.fixture(scope="session")
def sample_images(shared_data: Path) -> list[GroceryImage]:
    """The shared server's sample catalogue: a few training images, indexed at its start."""
    return grocery_images(shared_data, "train", CLASSES[:2], 2)


@dataclass(frozen=True)
class Served:
    """The shared server, and how its catalogue went in: the first SYNC_PART test images in one
    request (`sync`, its response), the rest as a job (`accepted`: the 202, `job`: its final status)."""

    server: Server
    sync: dict
    accepted: dict
    job: dict


def index_request(images: list[GroceryImage]) -> dict:
    """httpx arguments of a POST /index of these images, with their classes as metadata."""
    items = [{"id": i.id, "metadata": {"name": i.name, "category": i.category}} for i in images]
    return {"files": files([(i.path.name, i.path.read_bytes()) for i in images]), "data": {"items": json.dumps(items)}}


@pytest.fixture(scope="session")
def served(tmp_path_factory, checkpoint: Path, catalogue_images, sample_images) -> Served:
    """One server for the API, error and page tests, with its catalogue indexed."""
    workdir = tmp_path_factory.mktemp("served")
    copy_images(sample_images, workdir / "sample")
    server = Server(workdir, {"DEEPHASH_CHECKPOINT": str(checkpoint), "DEEPHASH_DATA_DIR": str(workdir),
                              "DEEPHASH_SAMPLE_CATALOGUE": "sample", **LIMITS}).start()
    try:
        sync = server.client.post("/index", headers=AUTH, **index_request(catalogue_images[:SYNC_PART]))
        accepted = server.client.post("/index", headers=AUTH, **index_request(catalogue_images[SYNC_PART:]))
        assert sync.status_code == 200, sync.text
        assert accepted.status_code == 202, accepted.text
        yield Served(server, sync.json(), accepted.json(), poll_job(server.client, accepted.json()["job_id"]))
    finally:
        server.close()


@pytest.fixture
def redis_namespace():
    """A fresh Redis namespace, deleted afterwards; skips when Redis does not answer."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis does not answer at {REDIS_URL} (.ci/run starts one)")
    namespace = f"deephash-test-{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()

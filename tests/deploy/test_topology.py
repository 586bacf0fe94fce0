"""The compose topology without Docker: one Redis with an append-only file, two api replicas.

Started the way docker-compose.yml starts them (the same DEEPHASH_* variables,
no sample catalogue, the catalogue in Redis): a catalogue indexed through one
replica is searched through the other, and a Redis restart loses nothing,
with both replicas saying not-ready while it is down and recovering on their own.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.index.conftest import RedisServer, wait_until
from tests.service.servers import API_KEY, AUTH, Server, files, grocery_images

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def compose_environment(redis_url: str) -> dict[str, str]:
    """The api service's environment from docker-compose.yml, pointed at this test's Redis."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    env = {}
    for name, value in compose["services"]["api"]["environment"].items():
        value = str(value)
        if value.startswith("${"):  # ${NAME:-default}
            value = value.split(":-", 1)[1].rstrip("}") if ":-" in value else ""
        env[name] = value
    env.update(DEEPHASH_REDIS_URL=redis_url, DEEPHASH_REDIS_NAMESPACE=f"topology-{uuid.uuid4().hex[:8]}",
               DEEPHASH_API_KEY=API_KEY)
    return env


def ready(server: Server) -> int:
    try:
        return server.client.get("/ready", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_two_replicas_share_one_catalogue_across_a_redis_restart(tmp_path: Path, redis_server: RedisServer,
                                                                 shared_data: Path, checkpoint: Path) -> None:
    env = {**compose_environment(redis_server.url), "DEEPHASH_CHECKPOINT": str(checkpoint)}
    first = Server(tmp_path / "a", env)
    second = Server(tmp_path / "b", env)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        first.start()
        second.start()
        images = grocery_images(shared_data, "test", ["Banana", "Carrots"], 4)
        payload = files([(img.id, img.path.read_bytes()) for img in images])
        indexed = first.client.post("/index", files=payload, headers=AUTH)
        assert indexed.status_code == 200, indexed.text
        probe = images[0]

        def second_finds(image) -> bool:
            hits = second.client.post("/search", files={"image": (image.id, image.path.read_bytes())},
                                      params={"k": 1}).json().get("hits", [])
            return bool(hits) and hits[0]["id"] == image.id and hits[0]["distance"] == 0

        wait_until(lambda: second_finds(probe), timeout=30, what="the second replica to see the first's writes")

        redis_server.stop()
        wait_until(lambda: ready(first) == 503 and ready(second) == 503, timeout=30,
                   what="both replicas to report not-ready while Redis is down")
        redis_server.start()
        wait_until(lambda: ready(first) == 200 and ready(second) == 200, timeout=60,
                   what="both replicas to recover on their own")

        for server in (first, second):
            assert server.client.get("/stats").json()["count"] == len(images)
            for image in images:
                assert server.client.get(f"/items/{image.id}").status_code == 200
        more = grocery_images(shared_data, "test", ["Watermelon"], 2)
        again = second.client.post("/index", files=files([(i.id, i.path.read_bytes()) for i in more]),
                                   headers=AUTH)
        assert again.status_code == 200, again.text
        wait_until(lambda: first.client.get("/stats").json()["count"] == len(images) + len(more), timeout=30,
                   what="the first replica to see writes made after the restart")
    finally:
        first.close()
        second.close()

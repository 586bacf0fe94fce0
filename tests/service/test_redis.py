"""Replicas on one Redis serve one catalogue: each sees the others' writes, and their jobs."""
from __future__ import annotations

import json
import time

import redis

from tests.service.conftest import REDIS_URL
from tests.service.servers import AUTH, files, poll_job


def eventually(check, timeout: float = 10.0):
    """Replicas follow each other's writes within about a second."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "replicas did not converge"
        time.sleep(0.1)
    return result


def test_two_replicas_share_one_catalogue(make_server, tmp_path, redis_namespace, catalogue_images):
    env = {"DEEPHASH_REDIS_URL": REDIS_URL, "DEEPHASH_REDIS_NAMESPACE": redis_namespace,
           "DEEPHASH_API_KEY": "test-key", "DEEPHASH_ASYNC_INDEX_THRESHOLD": "3"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_server(tmp_path / "a", **env)
    b = make_server(tmp_path / "b", **env)
    assert "redis://127.0.0.1:6379" in a.client.get("/stats").json()["index_store"]
    assert b.client.get("/ready").json()["checks"]["store"] is True

    image = catalogue_images[0]
    written = a.client.post("/index", headers=AUTH, files=files([(image.path.name, image.path.read_bytes())]),
                            data={"items": json.dumps([{"id": "shared-1", "metadata": {"price": 3}}])})
    assert written.json()["indexed"] == 1
    seen = eventually(lambda: (r := b.client.get("/items/shared-1")).status_code == 200 and r.json())
    assert seen["metadata"] == {"price": 3}
    hits = b.client.post("/search", files=files([("q.jpg", image.path.read_bytes())], "image")).json()["hits"]
    assert hits[0] == {"id": "shared-1", "distance": 0, "metadata": {"price": 3}}

    assert b.client.delete("/items/shared-1", headers=AUTH).status_code == 200
    eventually(lambda: a.client.get("/items/shared-1").status_code == 404)

    # A job queued on one replica is visible (and reported) by the other.
    batch = catalogue_images[6:10]
    accepted = a.client.post("/index", headers=AUTH, files=files([(i.path.name, i.path.read_bytes()) for i in batch]),
                             data={"items": json.dumps([{"id": i.id} for i in batch])})
    assert accepted.status_code == 202
    final = poll_job(b.client, accepted.json()["job_id"])
    assert (final["state"], final["indexed"]) == ("succeeded", 4)
    eventually(lambda: b.client.get("/stats").json()["count"] == 4)

    client = redis.Redis.from_url(REDIS_URL)
    job_keys = {k.decode() for k in client.scan_iter(match=f"{redis_namespace}:jobs:*")}
    job = accepted.json()["job_id"]
    assert f"{redis_namespace}:jobs:{job}:blobs" not in job_keys, "a finished job's uploads must be dropped"
    assert client.ttl(f"{redis_namespace}:jobs:{job}") > 0, "a finished job's report must expire"

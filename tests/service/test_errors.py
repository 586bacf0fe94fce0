"""Bad input inside a good request: one bad image or item is rejected alone; a flood is a fast 503.

Every request that is bad as a whole (each with its 4xx, code and message)
is in the bad-input corpus, tests/reliability/test_bad_input.py.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service.conftest import Served
from tests.service.servers import AUTH, files


def photo(catalogue_images) -> bytes:
    return catalogue_images[0].path.read_bytes()


def index(served: Served, images: list[tuple[str, bytes]], items: object = None, headers=AUTH) -> httpx.Response:
    data = {} if items is None else {"items": items if isinstance(items, str) else json.dumps(items)}
    return served.server.client.post("/index", headers=headers, files=files(images), data=data)


def test_one_bad_image_does_not_sink_the_batch(served: Served, catalogue_images):
    good = photo(catalogue_images)
    response = index(served, [("good.jpg", good), ("bad.jpg", good[:500]), ("big.json", b"{}")],
                     [{"id": "batch-good"}, {"id": "batch-bad"}, {"id": "batch-huge", "metadata": {"x": "y" * 70_000}}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["indexed"], body["rejected"]) == (1, 2)
    good_result, bad_result, huge_result = body["results"]
    assert good_result == {"id": "batch-good", "status": "indexed", "reason": None}
    assert bad_result["status"] == "rejected" and "truncated" in bad_result["reason"]
    assert huge_result["status"] == "rejected" and "not a recognised image" in huge_result["reason"]
    assert served.server.client.get("/items/batch-bad").status_code == 404
    assert served.server.client.delete("/items/batch-good", headers=AUTH).status_code == 200


def test_metadata_the_index_refuses_is_rejected_alone(served: Served, catalogue_images):
    good = photo(catalogue_images)
    response = index(served, [("a.jpg", good), ("b.jpg", good)],
                     [{"id": "meta-ok"}, {"id": "meta-huge", "metadata": {"x": "y" * 70_000}}])
    body = response.json()
    assert (body["indexed"], body["rejected"]) == (1, 1), body
    assert "metadata" in body["results"][1]["reason"]
    assert served.server.client.delete("/items/meta-ok", headers=AUTH).status_code == 200


# ----------------------------------------------------------------- overload


def test_overload_is_a_fast_503_with_retry_after(served: Served, catalogue_images):
    data = photo(catalogue_images)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=served.server.url, timeout=120) as client:
            return client.post("/search", files=files([("q.jpg", data)], "image"))

    with ThreadPoolExecutor(32) as pool:
        flood = pool.map(one, range(32))  # the fixture's queue holds 12 images
        # Encoding runs off the event loop: the server keeps answering while it works.
        began = time.perf_counter()
        assert served.server.client.get("/health").status_code == 200
        assert time.perf_counter() - began < 2
        responses = list(flood)
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503} and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"] == "overloaded"
    assert served.server.client.get("/health").status_code == 200

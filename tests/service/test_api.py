"""The API against a real server and the real encoder: indexing, search, items, operations."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.service.conftest import PER_CLASS, SYNC_PART, Served
from tests.service.servers import AUTH, GroceryImage, files


def search(served: Served, image: GroceryImage, k: int) -> dict:
    response = served.server.client.post("/search", params={"k": k}, files=files([(image.path.name,
                                                                                   image.path.read_bytes())], "image"))
    assert response.status_code == 200, response.text
    return response.json()


def test_sync_index_reports_every_item(served: Served, catalogue_images):
    assert served.sync["indexed"] == SYNC_PART and served.sync["rejected"] == 0
    assert [r["id"] for r in served.sync["results"]] == [i.id for i in catalogue_images[:SYNC_PART]]
    assert {r["status"] for r in served.sync["results"]} == {"indexed"}


def test_large_batch_runs_as_a_job(served: Served, catalogue_images):
    rest = len(catalogue_images) - SYNC_PART
    assert served.accepted["status_url"] == f"/jobs/{served.accepted['job_id']}"
    assert served.accepted["total"] == rest
    job = served.job
    progress = (job["state"], job["total"], job["done"], job["failed"], job["indexed"])
    assert progress == ("succeeded", rest, rest, 0, rest)
    assert job["rejected"] == [] and job["error"] is None


def test_every_image_finds_itself_at_distance_zero(served: Served, catalogue_images):
    # Concurrent requests: they share encoder batches.
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda image: search(served, image, 10), catalogue_images))
    for image, body in zip(catalogue_images, responses):
        at_zero = {h["id"] for h in body["hits"] if h["distance"] == 0}
        assert image.id in at_zero, (image.id, body["hits"][:3])
        assert [h["distance"] for h in body["hits"]] == sorted(h["distance"] for h in body["hits"])
        assert len(body["code"]) == 16 and set(body["timings"]) == {"decode_ms", "encode_ms", "search_ms", "total_ms"}


def test_the_right_class_dominates_the_top_hits(served: Served, catalogue_images):
    """Each query's other PER_CLASS - 1 nearest catalogue images: mostly of its class (chance: 1 in 4)."""
    by_id = {i.id: i for i in catalogue_images}
    same = total = won = 0
    for image in catalogue_images:
        hits = search(served, image, PER_CLASS + 4)["hits"]
        top = [h for h in hits if h["id"] in by_id and h["id"] != image.id][: PER_CLASS - 1]
        votes = Counter(by_id[h["id"]].name for h in top)
        won += votes.most_common(1)[0][0] == image.name
        same += votes[image.name]
        total += len(top)
    assert same / total >= 0.6, f"only {same} of {total} top hits share the query's class"
    assert won >= 0.8 * len(catalogue_images), f"the query's class leads the top hits of only {won} queries"


def test_hits_carry_stored_metadata(served: Served, catalogue_images):
    image = catalogue_images[0]
    hit = search(served, image, 1)["hits"][0]
    assert hit == {"id": image.id, "distance": 0, "metadata": {"name": image.name, "category": image.category}}


def test_k_and_max_distance_bound_the_hits(served: Served, catalogue_images):
    image = catalogue_images[3]
    assert len(search(served, image, 3)["hits"]) == 3
    response = served.server.client.post("/search", params={"k": 50, "max_distance": 0},
                                         files=files([("q.jpg", image.path.read_bytes())], "image"))
    assert {h["distance"] for h in response.json()["hits"]} == {0}


def test_get_item_and_similar(served: Served, catalogue_images):
    image = catalogue_images[5]
    client = served.server.client
    item = client.get(f"/items/{image.id}").json()
    assert item["metadata"] == {"name": image.name, "category": image.category} and len(item["code"]) == 16
    similar = client.get(f"/items/{image.id}/similar", params={"k": 4}).json()
    assert similar["id"] == image.id and similar["code"] == item["code"]
    assert len(similar["hits"]) == 4 and image.id not in [h["id"] for h in similar["hits"]]
    # ids with slashes may also come percent-encoded
    assert client.get(f"/items/{image.id.replace('/', '%2F')}").json()["id"] == image.id


def test_reindexing_an_id_replaces_it_and_delete_removes_it(served: Served, catalogue_images):
    client = served.server.client
    image, other = catalogue_images[0], catalogue_images[-1]
    body = client.post("/index", headers=AUTH, files=files([(image.path.name, image.path.read_bytes())]),
                       data={"items": '[{"id": "temporary", "metadata": {"price": 1.5}}]'}).json()
    assert body["indexed"] == 1
    before = client.get("/stats").json()["count"]
    client.post("/index", headers=AUTH, files=files([(other.path.name, other.path.read_bytes())]),
                data={"items": '[{"id": "temporary", "metadata": {"price": 2.5}}]'})
    assert client.get("/stats").json()["count"] == before
    assert client.get("/items/temporary").json()["metadata"] == {"price": 2.5}
    assert search(served, other, 2)["hits"][0]["distance"] == 0
    deleted = client.delete("/items/temporary", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json() == {"id": "temporary", "deleted": True}
    assert client.get("/items/temporary").status_code == 404
    assert client.get("/stats").json()["count"] == before - 1


def test_filename_is_the_id_without_items_field(served: Served, catalogue_images):
    client = served.server.client
    image = catalogue_images[1]
    body = client.post("/index", headers=AUTH, files=files([("by-filename.jpg", image.path.read_bytes())])).json()
    assert body["results"] == [{"id": "by-filename.jpg", "status": "indexed", "reason": None}]
    assert client.get("/items/by-filename.jpg").json()["metadata"] == {}
    assert client.delete("/items/by-filename.jpg", headers=AUTH).status_code == 200


def test_sample_catalogue_was_indexed_at_start(served: Served, sample_images):
    client = served.server.client
    stats = client.get("/stats").json()
    assert stats["sample_catalogue"]["state"] == "done" and stats["sample_catalogue"]["total"] == len(sample_images)
    item = client.get(f"/items/{sample_images[0].id}").json()
    assert item["metadata"]["category"] == sample_images[0].name
    thumbnail = client.get(item["metadata"]["image"])
    assert thumbnail.status_code == 200 and thumbnail.content == sample_images[0].path.read_bytes()


def test_operations_endpoints(served: Served, catalogue_images, sample_images, checkpoint):
    client = served.server.client
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and all(ready["checks"].values())
    stats = client.get("/stats").json()
    assert stats["bits"] == 64 and stats["device"] == "cpu" and len(stats["model_fingerprint"]) > 0
    assert stats["index_store"].endswith("index") and stats["count"] >= len(catalogue_images) + len(sample_images)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for stage in ("decode", "encode", "search", "total"):
        assert f'deephash_stage_seconds_count{{stage="{stage}"}}' in metrics.text
    assert "deephash_images_encoded_total" in metrics.text and "deephash_index_items" in metrics.text
    assert 'deephash_http_requests_total{method="POST",route="/search",status="200"}' in metrics.text


def test_request_id_is_honoured_or_made(served: Served):
    client = served.server.client
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32
    error = client.get("/items/unknown-id", headers={"X-Request-ID": "req-9"})
    assert error.headers["x-request-id"] == "req-9" and error.json()["request_id"] == "req-9"


def test_openapi_documents_the_endpoints_with_examples(served: Served):
    spec = served.server.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/search", "/index", "/items/{item_id}", "/items/{item_id}/similar", "/jobs/{job_id}",
                 "/stats", "/health", "/ready", "/metrics"):
        assert path in paths, path
    index_form = spec["components"]["schemas"][
        paths["/index"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    assert "examples" in index_form["properties"]["items"] and "202" in paths["/index"]["post"]["responses"]
    assert "examples" in spec["components"]["schemas"]["SearchResponse"]
    assert served.server.client.get("/docs").status_code == 200

"""Every bad input gets a 4xx with a JSON body naming the problem: never a 500, never a hang."""
from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.service.conftest import Served
from tests.service.servers import AUTH, files

MAX_UPLOAD = 1 << 20  # the served fixture's DEEPHASH_MAX_UPLOAD_BYTES


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(catalogue_images) -> bytes:
    return catalogue_images[0].path.read_bytes()


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["detail"], (word, body["detail"])
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def search(served: Served, data: bytes, name: str = "query", **params) -> httpx.Response:
    return served.server.client.post("/search", params=params, files=files([(name, data)], "image"))


# ------------------------------------------------------------------ images


def test_non_image(served: Served):
    assert_error(search(served, b"just some text, not pixels"), 415, "unsupported_image", "not a recognised image")


def test_unsupported_format(served: Served):
    tiff = encoded(Image.new("RGB", (64, 64), "red"), "TIFF")
    assert_error(search(served, tiff), 415, "unsupported_image", "TIFF", "JPEG")


def test_truncated_jpeg(served: Served, catalogue_images):
    data = photo(catalogue_images)
    assert_error(search(served, data[: len(data) // 2]), 400, "corrupt_image", "truncated")


def test_truncated_png(served: Served):
    png = encoded(Image.effect_noise((128, 128), 50).convert("RGB"), "PNG")
    assert_error(search(served, png[:-200]), 400, "corrupt_image", "truncated or corrupt")


def test_empty_file(served: Served):
    assert_error(search(served, b""), 400, "empty_image", "empty")


@pytest.mark.parametrize("size", [(1200, 1000), (3000, 3000)], ids=["over-the-limit", "over-twice-the-limit"])
def test_decompression_bomb(served: Served, size):
    # A few kB of PNG that would decode to millions of pixels (the fixture allows 1,000,000).
    bomb = encoded(Image.new("L", size), "PNG", optimize=True)
    assert len(bomb) < 50_000
    assert_error(search(served, bomb), 413, "too_many_pixels", "pixels")


def test_image_file_over_the_cap(served: Served):
    # Within the request limit (the cap plus multipart overhead) but over the file cap.
    assert_error(search(served, b"\xff\xd8" + bytes(MAX_UPLOAD + 1000)), 413, "image_too_large", str(MAX_UPLOAD))


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {name.lower(): value for name, value in (line.split(b": ", 1) for line in head.split(b"\r\n")[1:])}
    length = int(headers[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


def test_declared_oversize_body_is_refused_before_it_is_sent(served: Served):
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 104857600\r\n\r\n")  # 100 MB announced, none sent
        status, body = read_response(sock)
    assert status == 413 and body["error"] == "request_too_large" and "limit" in body["detail"]


def test_streamed_oversize_body_is_cut_off_while_reading(served: Served):
    # No Content-Length: the server must count while reading, and answer without waiting for the end
    # (the body below never ends; a server reading it all would time the test out).
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        part = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n\r\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = bytes(256 * 1024)
        for _ in range(MAX_UPLOAD // len(chunk) + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, body = read_response(sock)
    assert status == 413 and body["error"] == "request_too_large"


# ------------------------------------------------------------ search fields


@pytest.mark.parametrize("k", ["0", "-3", "51", "2.5", "ten"])
def test_bad_k(served: Served, catalogue_images, k):
    body = assert_error(search(served, photo(catalogue_images), k=k), 422, "invalid_request", "k")
    assert [e["field"] for e in body["errors"]] == ["k"]


def test_bad_max_distance(served: Served, catalogue_images):
    body = assert_error(search(served, photo(catalogue_images), max_distance=-1), 422, "invalid_request")
    assert body["errors"][0]["field"] == "max_distance"


def test_missing_image_field(served: Served, catalogue_images):
    response = served.server.client.post("/search", files=files([("a.jpg", photo(catalogue_images))], "picture"))
    body = assert_error(response, 422, "invalid_request", "image")
    assert body["errors"][0]["field"] == "image"


def test_image_sent_as_text_field(served: Served):
    response = served.server.client.post("/search", data={"image": "not a file"}, files={"x": ("x", b"")})
    assert_error(response, 422, "invalid_request", "image")


def test_not_multipart(served: Served):
    response = served.server.client.post("/search", json={"image": "aGVsbG8="})
    assert_error(response, 415, "unsupported_media_type", "multipart/form-data")


# ------------------------------------------------------------------ /index


def index(served: Served, images: list[tuple[str, bytes]], items: object = None, headers=AUTH) -> httpx.Response:
    data = {} if items is None else {"items": items if isinstance(items, str) else json.dumps(items)}
    return served.server.client.post("/index", headers=headers, files=files(images), data=data)


def test_index_needs_the_api_key(served: Served, catalogue_images):
    one = [("a.jpg", photo(catalogue_images))]
    assert_error(index(served, one, headers={}), 401, "unauthorized", "X-API-Key")
    assert_error(index(served, one, headers={"X-API-Key": "wrong"}), 401, "unauthorized", "does not match")
    assert_error(served.server.client.delete("/items/anything"), 401, "unauthorized")


def test_malformed_items_json(served: Served, catalogue_images):
    body = assert_error(index(served, [("a.jpg", photo(catalogue_images))], "[{not json"), 422, "invalid_request",
                        "items", "JSON")
    assert body["errors"][0]["field"] == "items"


@pytest.mark.parametrize("items, words", [
    ({"id": "a"}, ["array"]),
    ([{"metadata": {}}], ["items.0.id", "Field required"]),
    ([{"id": ""}], ["id"]),
    ([{"id": "a", "metadata": [1, 2]}], ["items.0.metadata", "object"]),
    ([{"id": "a", "extra": 1}], ["extra"]),
], ids=["not-a-list", "no-id", "empty-id", "metadata-not-object", "unknown-key"])
def test_invalid_items(served: Served, catalogue_images, items, words):
    assert_error(index(served, [("a.jpg", photo(catalogue_images))], items), 422, "invalid_request", "items", *words)


def test_items_and_files_must_pair_up(served: Served, catalogue_images):
    two = [("a.jpg", photo(catalogue_images))] * 2
    assert_error(index(served, two, [{"id": "only-one"}]), 422, "invalid_request", "1 entries for 2 image files")


def test_duplicate_ids(served: Served, catalogue_images):
    two = [("a.jpg", photo(catalogue_images))] * 2
    assert_error(index(served, two, [{"id": "same"}, {"id": "same"}]), 422, "invalid_request", "duplicate", "same")
    assert_error(index(served, two), 422, "invalid_request", "duplicate", "a.jpg")


def test_no_files(served: Served):
    response = served.server.client.post("/index", headers=AUTH, data={"items": "[]"}, files={"other": ("x", b"x")})
    body = assert_error(response, 422, "invalid_request", "images")
    assert body["errors"][0]["field"] == "images"


def test_too_many_files(served: Served):
    response = index(served, [(f"{n}.jpg", b"x") for n in range(41)])  # the fixture allows 40
    assert_error(response, 400, "bad_request", "Too many files")


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


# -------------------------------------------------------- unknown resources


def test_unknown_ids(served: Served):
    client = served.server.client
    assert_error(client.get("/items/no-such-item"), 404, "item_not_found", "no-such-item")
    assert_error(client.get("/items/no-such-item/similar"), 404, "item_not_found")
    assert_error(client.delete("/items/no-such-item", headers=AUTH), 404, "item_not_found")
    assert_error(client.get("/jobs/0123456789abcdef0123456789abcdef"), 404, "job_not_found")
    assert_error(client.get("/jobs/../../etc"), 404, "not_found")
    assert_error(client.get("/no/such/route"), 404, "not_found")


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

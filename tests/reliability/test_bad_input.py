"""The bad-input corpus: every hostile or broken request gets its documented 4xx, a JSON body
naming the problem, never a 5xx or a hang, and the server stays healthy and lean afterwards.

One table, one row per case: what is sent, the status and error code expected,
and words the message must contain.  Requests go to a real server (uvicorn in
a subprocess) with the service tests' small limits: 1 MiB images, 1,000,000
pixels, 40 files per POST /index, k <= 50, an API key.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.measure import rss_bytes
from tests.reliability.conftest import MAX_INDEX_BYTES
from tests.reliability.hostile import (
    CHUNK,
    encoded,
    exchange,
    gif_declaring,
    noise,
    png_declaring,
    with_bad_crc,
)
from tests.service.servers import AUTH, Server, files

MAX_UPLOAD = 1 << 20  # DEEPHASH_MAX_UPLOAD_BYTES of the service tests' limits
HUNDRED_MB = 100 * len(CHUNK)
# More than a socket pair buffers before the writer blocks: a server that refuses a body as soon as it
# is over its limit has taken at most the limit plus this.
SOCKET_SLACK = 16 << 20
RSS_GROWTH_LIMIT = 200 << 20


MULTIPART = "multipart/form-data; boundary=b"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: dict
    sent: int = 0


@dataclass(frozen=True)
class Kit:
    """What a request is built from: the server, and a real photo (a grocery JPEG)."""

    server: Server
    photo: bytes


Payload = bytes | Callable[[bytes], bytes]  # the bytes, or made from the photo
Send = Callable[[Kit], Reply]


def _reply(response: httpx.Response) -> Reply:
    return Reply(response.status_code, dict(response.headers), response.json())


def _bytes(payload: Payload, photo: bytes) -> bytes:
    return payload(photo) if callable(payload) else payload


def search(payload: Payload, content_type: str = "image/jpeg", field: str = "image", **params: Any) -> Send:
    """POST /search with one uploaded file."""
    return lambda kit: _reply(kit.server.client.post(
        "/search", params=params, files={field: ("query.jpg", _bytes(payload, kit.photo), content_type)}))


def post(path: str, **request: Any) -> Send:
    """POST with httpx's own arguments (content, data, files, json, headers)."""
    return lambda kit: _reply(kit.server.client.post(path, **request))


def index(uploads: list[Payload], items: Any = None, headers: dict[str, str] = AUTH) -> Send:
    """POST /index of these uploads (named 0.jpg, 1.jpg, ...), with `items` as JSON unless already a string
    (or a function making the string, for one too large to keep around)."""
    def send(kit: Kit) -> Reply:
        text = items() if callable(items) else items
        data = {} if text is None else {"items": text if isinstance(text, str) else json.dumps(text)}
        pairs = [(f"{n}.jpg", _bytes(u, kit.photo)) for n, u in enumerate(uploads)]
        return _reply(kit.server.client.post("/index", headers=headers, data=data, files=files(pairs)))
    return send


def call(method: str, path: str, headers: dict[str, str] | None = None) -> Send:
    return lambda kit: _reply(kit.server.client.request(method, path, headers=headers))


def raw(request_line: str) -> Send:
    """A request line sent as is: httpx would normalise the `..` away."""
    return lambda kit: Reply(**vars(exchange(kit.server.port, f"{request_line}\r\nHost: x\r\n\r\n".encode())))


def streamed(path: str, field: str, declared: bool) -> Send:
    """A 100 MB upload in field `field`, its bytes one reused MiB: announced by Content-Length, or chunked."""
    part = (f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="huge.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    length = f"Content-Length: {HUNDRED_MB}" if declared else "Transfer-Encoding: chunked"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {MULTIPART}\r\n{length}\r\n\r\n").encode()
    return lambda kit: Reply(**vars(exchange(kit.server.port, head, part, HUNDRED_MB - len(part),
                                             chunked=not declared)))


def truncated(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


def million_entries() -> str:
    return "[" + ",".join(f'{{"id":"{n}"}}' for n in range(1_000_000)) + "]"


@dataclass(frozen=True)
class Case:
    name: str
    send: Send
    status: int
    code: str
    words: tuple[str, ...] = ()
    within_s: float = 15.0  # no hang: the answer comes within this
    reads_up_to: int = 0  # body bytes the server may read before it refuses (its limit, for counted bodies)
    fields: tuple[str, ...] = ()  # a 422's `errors` names exactly these fields


def case(name: str, send: Send, status: int, code: str, *words: str, within_s: float = 15.0,
         reads_up_to: int = 0, fields: tuple[str, ...] = ()) -> Case:
    return Case(name, send, status, code, words, within_s, reads_up_to, fields)


UNTERMINATED = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'
NOT_AN_IMAGE = "not a recognised image"
ONE = [lambda photo: photo]  # one upload: the photo

CORPUS = [
    # ------------------------------------------------ not images, though they say so
    case("text-as-jpeg", search(b"just some text, not pixels"), 415, "unsupported_image", NOT_AN_IMAGE),
    case("html-as-png", search(b"<html><script>alert(1)</script></html>", "image/png"), 415,
         "unsupported_image", NOT_AN_IMAGE),
    case("svg-as-png", search(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/png"),
         415, "unsupported_image", NOT_AN_IMAGE),
    case("pdf-as-webp", search(b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF", "image/webp"), 415,
         "unsupported_image", NOT_AN_IMAGE),
    case("elf-as-gif", search(b"\x7fELF\x02\x01\x01" + bytes(500), "image/gif"), 415, "unsupported_image",
         NOT_AN_IMAGE),
    case("tiff-not-accepted", search(encoded(Image.new("RGB", (64, 64), "red"), "TIFF"), "image/tiff"), 415,
         "unsupported_image", "TIFF", "JPEG"),
    case("jpeg-magic-only", search(b"\xff\xd8\xff"), 415, "unsupported_image", NOT_AN_IMAGE),
    case("png-signature-and-header-only", search(noise("PNG")[:33], "image/png"), 415, "unsupported_image"),
    # ------------------------------------------------ truncated and corrupt
    case("jpeg-truncated-half", search(truncated(0.5)), 400, "corrupt_image", "truncated"),
    case("jpeg-truncated-after-header", search(truncated(0.05)), 400, "corrupt_image", "truncated"),
    case("png-truncated", search(noise("PNG")[:-200], "image/png"), 400, "corrupt_image", "truncated or corrupt"),
    case("png-bad-crc", search(with_bad_crc(noise("PNG")), "image/png"), 400, "corrupt_image", "checksum"),
    case("webp-truncated", search(truncated(0.5)(noise("WEBP")), "image/webp"), 400, "corrupt_image"),
    case("gif-truncated", search(truncated(0.5)(noise("GIF")), "image/gif"), 400, "corrupt_image", "truncated"),
    case("zero-bytes", search(b""), 400, "empty_image", "empty"),
    # ------------------------------------------------ too big: pixels, file, body
    case("bomb-png-30000x30000", search(png_declaring(30000, 30000), "image/png"), 413, "too_many_pixels",
         "900000000 pixels"),
    case("bomb-png-just-over-the-cap", search(encoded(Image.new("L", (1200, 1000)), "PNG", optimize=True)),
         413, "too_many_pixels", "pixels"),
    case("bomb-png-3000x3000-encoded", search(encoded(Image.new("L", (3000, 3000)), "PNG", optimize=True)),
         413, "too_many_pixels", "pixels"),
    case("bomb-gif-65535x65535", search(gif_declaring(65535, 65535), "image/gif"), 413, "too_many_pixels"),
    case("image-file-over-the-cap", search(b"\xff\xd8" + bytes(MAX_UPLOAD + 1000)), 413, "image_too_large",
         str(MAX_UPLOAD)),
    case("search-100mb-declared", streamed("/search", "image", declared=True), 413, "request_too_large", "limit"),
    case("search-100mb-chunked", streamed("/search", "image", declared=False), 413, "request_too_large", "limit",
         reads_up_to=MAX_UPLOAD),
    case("index-100mb-declared", streamed("/index", "images", declared=True), 413, "request_too_large",
         str(MAX_INDEX_BYTES)),
    case("index-100mb-chunked", streamed("/index", "images", declared=False), 413, "request_too_large",
         str(MAX_INDEX_BYTES), reads_up_to=MAX_INDEX_BYTES),
    # ------------------------------------------------ search parameters
    *[case(f"k-{name}", search(ONE[0], k=k), 422, "invalid_request", "k", fields=("k",))
      for name, k in [("zero", "0"), ("negative", "-3"), ("over-max", "51"), ("huge", str(10**30)),
                      ("fraction", "2.5"), ("word", "ten"), ("empty", ""), ("nan", "NaN")]],
    case("max-distance-negative", search(ONE[0], max_distance="-1"), 422, "invalid_request", "max_distance",
         fields=("max_distance",)),
    case("max-distance-word", search(ONE[0], max_distance="far"), 422, "invalid_request", "max_distance",
         fields=("max_distance",)),
    # ------------------------------------------------ wrong fields, not multipart
    case("search-wrong-field-name", search(ONE[0], field="picture"), 422, "invalid_request", "image",
         "Field required", fields=("image",)),
    case("search-image-as-text-field", post("/search", data={"image": "not a file"}, files={"x": ("x", b"")}),
         422, "invalid_request", "image"),
    case("search-json-body", post("/search", json={"image": "aGVsbG8="}), 415, "unsupported_media_type",
         "multipart/form-data", "application/json"),
    case("search-urlencoded-body", post("/search", data={"image": "x"}), 415, "unsupported_media_type",
         "application/x-www-form-urlencoded"),
    case("search-no-content-type", post("/search", content=b"\xff\xd8\xff"), 415, "unsupported_media_type",
         "no Content-Type"),
    case("multipart-without-boundary", post("/search", content=b"x", headers={"Content-Type": "multipart/form-data"}),
         400, "bad_request", "boundary"),
    case("multipart-garbage", post("/search", content=b"garbage", headers={"Content-Type": MULTIPART}), 400,
         "bad_request", "multipart"),
    case("multipart-unterminated", post("/search", content=UNTERMINATED, headers={"Content-Type": MULTIPART}),
         422, "invalid_request", "image"),
    case("index-json-body", post("/index", json=[{"id": "a"}], headers=AUTH), 415, "unsupported_media_type"),
    # ------------------------------------------------ POST /index: the key, the items field, the files
    case("index-no-api-key", index(ONE, headers={}), 401, "unauthorized", "X-API-Key"),
    case("index-wrong-api-key", index(ONE, headers={"X-API-Key": "wrong"}), 401, "unauthorized", "does not match"),
    case("index-non-ascii-api-key", index(ONE, headers={"X-API-Key": "cl\xe9-\xff".encode("latin-1")}), 401,
         "unauthorized"),
    case("items-malformed-json", index(ONE, "[{not json"), 422, "invalid_request", "items", "JSON",
         fields=("items",)),
    case("items-trailing-garbage", index(ONE, '[{"id": "a"}] and more'), 422, "invalid_request", "Extra data"),
    case("items-not-an-array", index(ONE, {"id": "a"}), 422, "invalid_request", "items", "array"),
    case("items-entry-without-id", index(ONE, [{"metadata": {}}]), 422, "invalid_request", "items.0.id",
         "Field required"),
    case("items-empty-id", index(ONE, [{"id": ""}]), 422, "invalid_request", "items.0.id"),
    case("items-id-not-a-string", index(ONE, [{"id": 42}]), 422, "invalid_request", "items.0.id", "string"),
    case("items-metadata-not-an-object", index(ONE, [{"id": "a", "metadata": [1, 2]}]), 422, "invalid_request",
         "items.0.metadata", "object"),
    case("items-unknown-key", index(ONE, [{"id": "a", "extra": 1}]), 422, "invalid_request", "extra"),
    case("items-metadata-nested-100000-deep",
         index(ONE, '[{"id": "a", "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}]"), 422,
         "invalid_request", "items", "nested too deeply"),
    case("items-fewer-than-files", index(ONE * 2, [{"id": "only-one"}]), 422, "invalid_request",
         "1 entries for 2 image files"),
    case("items-million-entries", index(ONE, million_entries), 422, "invalid_request",
         "more than 1 entries for 1 image files", within_s=5.0),
    case("items-duplicate-ids", index(ONE * 2, [{"id": "same"}, {"id": "same"}]), 422, "invalid_request",
         "duplicate", "same"),
    case("files-duplicate-names", post("/index", headers=AUTH, files=files([("a.jpg", b"x"), ("a.jpg", b"y")])),
         422, "invalid_request", "duplicate", "a.jpg"),
    case("index-no-files", post("/index", headers=AUTH, data={"items": "[]"}, files={"other": ("x", b"x")}), 422,
         "invalid_request", "images", fields=("images",)),
    case("index-41-files", post("/index", headers=AUTH, files=files([(f"{n}.jpg", b"x") for n in range(41)])),
         400, "bad_request", "Too many files"),
    case("index-1001-fields", post("/index", headers=AUTH, files=[(f"f{n}", (None, "x")) for n in range(1001)]
                                   + files([("a.jpg", b"x")])), 400, "bad_request", "Too many fields"),
    # ------------------------------------------------ ids and paths: ids are never paths
    case("item-unknown", call("GET", "/items/no-such-item"), 404, "item_not_found", "no-such-item"),
    case("item-traversal-raw", raw("GET /items/../../etc/passwd HTTP/1.1"), 404, "item_not_found",
         "'../../etc/passwd'"),
    case("item-traversal-encoded", call("GET", "/items/..%2F..%2Fetc%2Fpasswd"), 404, "item_not_found",
         "'../../etc/passwd'"),
    case("item-unicode-id", call("GET", "/items/%E5%95%86%E5%93%81-%F0%9F%8D%8C"), 404, "item_not_found",
         "商品-🍌"),
    case("item-nul-byte-id", call("GET", "/items/a%00b"), 404, "item_not_found", "\\x00"),
    case("item-10000-char-id", call("GET", "/items/" + "x" * 10_000), 404, "item_not_found"),
    case("delete-10000-char-id", call("DELETE", "/items/" + "x" * 10_000, AUTH), 400, "invalid_id",
         "the limit is 512"),
    case("delete-unknown", call("DELETE", "/items/no-such-item", AUTH), 404, "item_not_found", "no-such-item"),
    case("delete-no-api-key", call("DELETE", "/items/anything"), 401, "unauthorized", "X-API-Key"),
    case("similar-unknown", call("GET", "/items/no-such-item/similar"), 404, "item_not_found"),
    case("job-malformed-id", call("GET", "/jobs/not-a-job-id"), 404, "job_not_found", "not-a-job-id"),
    case("job-unknown-id", call("GET", "/jobs/0123456789abcdef0123456789abcdef"), 404, "job_not_found"),
    case("job-traversal-raw", raw("GET /jobs/../../etc/passwd HTTP/1.1"), 404, "not_found"),
    case("catalogue-traversal-raw", raw("GET /catalogue/../../../../etc/passwd HTTP/1.1"), 404, "not_found"),
    case("catalogue-traversal-encoded-dots", call("GET", "/catalogue/%2e%2e/%2e%2e/%2e%2e/etc/passwd"), 404,
         "not_found"),
    case("catalogue-traversal-encoded-slashes", call("GET", "/catalogue/..%2f..%2f..%2fetc%2fpasswd"), 404,
         "not_found"),
    case("catalogue-absolute-path", call("GET", "/catalogue//etc/passwd"), 404, "not_found"),
    case("catalogue-nul-byte", call("GET", "/catalogue/Lemon%00.jpg"), 404, "not_found"),
    case("catalogue-symlink-out-of-root", call("GET", "/catalogue/escape.jpg"), 404, "not_found"),
    # ------------------------------------------------ routes and methods
    case("unknown-route", call("GET", "/no/such/route"), 404, "not_found", "/no/such/route"),
    case("put-search", call("PUT", "/search"), 405, "method_not_allowed", "allowed: POST"),
    case("post-item", call("POST", "/items/some-id"), 405, "method_not_allowed", "allowed: GET, DELETE"),
]


@pytest.fixture(scope="module")
def kit(guarded: Server, catalogue_images) -> Kit:
    return Kit(guarded, catalogue_images[0].path.read_bytes())


@pytest.fixture(scope="module")
def baseline_rss(kit: Kit) -> int:
    """The server's memory once it has served a search (the model warm), before the corpus."""
    assert kit.server.client.post("/search", files=files([("q.jpg", kit.photo)], "image")).status_code == 200
    return rss_bytes(kit.server.process.pid)


def test_the_corpus_is_large_and_named_uniquely():
    names = [c.name for c in CORPUS]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("bad", CORPUS, ids=lambda c: c.name)
def test_bad_input_gets_a_clear_4xx(kit: Kit, baseline_rss: int, bad: Case):
    started = time.perf_counter()
    reply = bad.send(kit)
    seconds = time.perf_counter() - started
    assert reply.status == bad.status, reply.body
    assert reply.body["error"] == bad.code, reply.body
    for word in bad.words:
        assert word in reply.body["detail"], (word, reply.body["detail"])
    assert reply.body["request_id"] == reply.headers["x-request-id"]
    assert seconds < bad.within_s, f"answered after {seconds:.1f} s"
    assert reply.sent < bad.reads_up_to + SOCKET_SLACK, f"the server took {reply.sent} bytes before refusing"
    if bad.fields:
        assert [error["field"] for error in reply.body["errors"]] == list(bad.fields), reply.body


def test_the_server_is_healthy_and_lean_after_the_corpus(kit: Kit, baseline_rss: int):
    client = kit.server.client
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    found = client.post("/search", params={"k": 3}, files=files([("q.jpg", kit.photo)], "image"))
    assert found.status_code == 200 and found.json()["count"] >= 1
    growth = rss_bytes(kit.server.process.pid) - baseline_rss
    assert growth < RSS_GROWTH_LIMIT, f"the server's memory grew by {growth / 2**20:.0f} MiB"


PER_ITEM = [
    ("metadata-over-64kib", {"id": "big-meta", "metadata": {"x": "y" * 70_000}}, "the limit is 65536"),
    ("metadata-nan", '[{"id": "nan-meta", "metadata": {"price": NaN}}]', "not JSON-serialisable"),
    ("id-over-512-bytes", {"id": "é" * 300}, "the limit is 512"),
]


@pytest.mark.parametrize("name, item, words", PER_ITEM, ids=[p[0] for p in PER_ITEM])
def test_items_the_index_refuses_are_rejected_by_name(kit: Kit, name: str, item: Any, words: str):
    """The index's own limits (id bytes, metadata bytes, strict JSON) are per item: POST /index answers
    200 with the item rejected and the reason, and the item is not stored."""
    items = item if isinstance(item, str) else [item]
    reply = index(ONE, items)(kit)
    assert reply.status == 200, reply.body
    (result,) = reply.body["results"]
    assert result["status"] == "rejected" and words in result["reason"], result
    assert kit.server.client.get(f"/items/{result['id']}").status_code == 404

"""A short run of bench/load_test.py against a real server: overload is a fast 503, memory is flat.

Eight search clients and two index clients against an encode queue of
eight images: most requests find the queue full.  The server must refuse
those at once (503 with Retry-After, p99 under half a second), never queue
past its capacity, never answer another 5xx, keep serving both endpoints,
and end the run without its memory having grown.
"""
from __future__ import annotations

import asyncio

import pytest

from bench.load_test import LoadConfig, run_load, server_settings
from tests.service.servers import AUTH

CONFIG = LoadConfig(seconds=10, search_clients=8, index_clients=2, index_batch=2, queue_size=8)
FAST_503_S = 0.5
RSS_GROWTH_MIB = 128


@pytest.mark.slow
def test_overload_is_refused_fast_and_memory_stays_flat(make_server, catalogue_images):
    server = make_server(DEEPHASH_API_KEY=AUTH["X-API-Key"], **server_settings(CONFIG))
    images = [image.path.read_bytes() for image in catalogue_images[:16]]
    result = asyncio.run(run_load(server.url, CONFIG, images, pid=server.process.pid, api_key=AUTH["X-API-Key"]))

    assert set(result["errors"]) <= {"503"}, result["by_status"]
    assert result["by_status"]["/search"].get("200") and result["by_status"]["/index"].get("200"), result["by_status"]
    overload = result["overload"]
    assert overload["refused"] > 0, "the clients never filled the queue: nothing was tested"
    assert overload["without_retry_after"] == 0
    assert overload["latency_ms"]["p99"] < FAST_503_S * 1e3, overload
    assert overload["queue_max_admitted"] <= overload["queue_capacity"] == CONFIG.queue_size
    assert result["rss"]["growth_mib"] < RSS_GROWTH_MIB, result["rss"]
    assert server.client.get("/health").status_code == 200

"""Shared by the store tests: codes derived from ids, index comparison, and Redis servers (shared and private)."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from index import HammingIndex
from tests.conftest import free_port

REDIS_URL = os.environ.get("DEEPHASH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def code_of(item_id: str, bits: int = 64) -> np.ndarray:
    """A packed code that any process can recompute from the id alone (uint8 [bits/8])."""
    return np.frombuffer(hashlib.blake2b(item_id.encode(), digest_size=bits // 8).digest(), dtype=np.uint8)


def codes_of(ids: list[str], bits: int = 64) -> np.ndarray:
    return np.stack([code_of(i, bits) for i in ids])


def assert_same_index(index: HammingIndex, reference: HammingIndex) -> None:
    """Same items, codes, metadata, and the same row order (seen through the tie order of full searches)."""
    assert len(index) == len(reference)
    queries = np.random.default_rng(7).integers(0, 256, size=(3, index.bits // 8), dtype=np.uint8)
    k = min(max(len(reference), 1), 10_000)
    got, want = index.search(queries, k), reference.search(queries, k)
    assert got.ids.tolist() == want.ids.tolist()
    assert got.distances.tolist() == want.distances.tolist()
    assert got.metadata == want.metadata
    for item_id in got.ids[0][: len(reference)]:
        assert index.get(item_id) == reference.get(item_id)


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis answers at {REDIS_URL} ({exc}); start redis-server or set DEEPHASH_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A namespace of the test's own on the shared Redis, deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class RedisServer:
    """A redis-server of the test's own that writes every command to its append-only file before answering."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_until(lambda: self._answers(client), what=f"redis-server on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as an operator's restart would do."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()

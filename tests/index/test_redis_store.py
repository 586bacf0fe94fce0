"""RedisStore: replicas sharing one namespace converge to the same rows in the same order, through
snapshots, trimmed logs and a Redis restart; damage and outages are clear errors."""
from __future__ import annotations

import logging
import threading

import pytest
import redis

from index import CorruptStore, FingerprintMismatch, HammingIndex, LogGap, StoreError
from index.stores.redis import RedisStore
from tests.conftest import free_port
from tests.index.conftest import RedisServer, assert_same_index, codes_of, wait_until

BITS = 64


def replica(url: str, namespace: str, **options) -> HammingIndex:
    return HammingIndex(BITS, "m", store=RedisStore(url, namespace=namespace, **options), follow_interval=0.2)


def write(index: HammingIndex, prefix: str, lo: int, hi: int) -> None:
    ids = [f"{prefix}-{i}" for i in range(lo, hi)]
    index.upsert(ids, codes_of(ids), [{"by": prefix, "i": i} for i in range(lo, hi)])


def seq(index: HammingIndex) -> int:
    return index.stats()["seq"]


def test_replicas_see_each_others_writes_in_one_order(redis_url: str, redis_namespace: str) -> None:
    a, b = replica(redis_url, redis_namespace), replica(redis_url, redis_namespace)
    for step in range(20):
        write(a, "a", 5 * step, 5 * step + 5)
        write(b, "b", 5 * step, 5 * step + 5)
        write(b, "a", step, step + 1)  # b rewrites a's items: a conflict both must resolve alike
    a.remove([f"b-{i}" for i in range(0, 100, 7)])
    wait_until(lambda: seq(a) == seq(b) == 61, what="the followers")  # no sync(): the follower threads
    assert_same_index(a, b)

    write(a, "late", 0, 10)
    b.sync()  # no waiting: sync() reads what is logged now
    assert "late-9" in b
    assert_same_index(a, b)
    a.close()
    b.close()


def test_a_new_replica_loads_the_snapshot_and_the_log_tail(redis_url: str, redis_namespace: str) -> None:
    a = replica(redis_url, redis_namespace, snapshot_after_entries=10)
    for step in range(35):
        write(a, "a", 10 * step, 10 * step + 10)
    a.remove(["a-3", "a-40"])
    client = redis.Redis.from_url(redis_url)
    pointer = client.hgetall(f"{redis_namespace}:snapshot")
    first_kept = int(client.xrange(f"{redis_namespace}:log", count=1)[0][0].split(b"-")[0])
    assert int(pointer[b"seq"]) == 30
    assert first_kept == 21  # the log keeps what came after the previous snapshot
    assert len(client.smembers(f"{redis_namespace}:generations")) == 2  # the current and the previous one

    b = replica(redis_url, redis_namespace)
    assert seq(b) == 36
    assert_same_index(b, a)
    client.close()
    a.close()
    b.close()


def test_a_replica_behind_the_trimmed_log_reloads(redis_url: str, redis_namespace: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    lagging = replica(redis_url, redis_namespace)
    lagging._stop.set()  # pause its follower, as a stalled process would be
    lagging._follower.join()
    writer = replica(redis_url, redis_namespace, snapshot_after_entries=5)
    for step in range(30):
        write(writer, "w", 3 * step, 3 * step + 3)

    with pytest.raises(LogGap):
        RedisStore(redis_url, namespace=redis_namespace).read_log(after=seq(lagging))
    with caplog.at_level(logging.WARNING, logger="index.hamming"):
        lagging.sync()
    assert "reloading" in caplog.text
    assert_same_index(lagging, writer)
    lagging.close()
    writer.close()


def test_another_models_fingerprint_is_refused(redis_url: str, redis_namespace: str) -> None:
    replica(redis_url, redis_namespace).close()
    with pytest.raises(FingerprintMismatch) as caught:
        HammingIndex(128, "other", store=RedisStore(redis_url, namespace=redis_namespace))
    assert "64-bit codes from model 'm'" in str(caught.value)
    assert "128-bit codes from model 'other'" in str(caught.value)
    with pytest.raises(ValueError, match="needs its bits and model id"):
        HammingIndex(store=RedisStore(redis_url, namespace=redis_namespace + "-new"))


@pytest.mark.parametrize("damage", ["flipped byte", "missing chunk"])
def test_a_damaged_snapshot_is_corrupt_store(redis_url: str, redis_namespace: str, damage: str) -> None:
    index = replica(redis_url, redis_namespace, snapshot_after_entries=1)
    write(index, "a", 0, 100)
    index.close()
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_namespace}:snapshot:{int(client.hget(f'{redis_namespace}:snapshot', 'gen'))}"
    if damage == "flipped byte":
        chunk = bytearray(client.hget(key, "meta_blob:0"))
        chunk[5] ^= 0xFF
        client.hset(key, "meta_blob:0", bytes(chunk))
    else:
        client.hdel(key, "codes:0")
    client.close()
    with pytest.raises(CorruptStore, match=key):
        replica(redis_url, redis_namespace)


def test_an_unreachable_redis_is_a_store_error_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    store = RedisStore(url)
    assert store.ping() is False
    assert "hunter2" not in store.location
    with pytest.raises(StoreError, match=r"redis://127\.0\.0\.1:\d+/0") as caught:
        HammingIndex(BITS, "m", store=store)
    assert "hunter2" not in str(caught.value)


def test_replicas_carry_on_across_a_redis_restart(redis_server: RedisServer) -> None:
    namespace = "restart"
    old = replica(redis_server.url, namespace, snapshot_after_entries=4)
    for step in range(10):
        write(old, "before", 3 * step, 3 * step + 3)

    redis_server.stop()
    assert old.store.ping() is False
    with pytest.raises(StoreError):
        write(old, "down", 0, 1)
    redis_server.start()  # same port, same append-only file

    assert old.store.ping() is True
    new = replica(redis_server.url, namespace)
    assert_same_index(new, old)
    write(new, "after", 0, 5)
    wait_until(lambda: "after-4" in old, what="the old replica's follower")  # it outlived the outage
    write(old, "after-old", 0, 5)
    wait_until(lambda: seq(new) == seq(old), what="the new replica's follower")
    assert_same_index(new, old)
    old.close()
    new.close()


def test_replicas_snapshotting_at_once_agree(redis_url: str, redis_namespace: str) -> None:
    replicas = [replica(redis_url, redis_namespace, snapshot_after_entries=3) for _ in range(3)]
    failures: list[BaseException] = []

    def write_batches(r: HammingIndex, n: int) -> None:
        try:
            for s in range(25):
                write(r, f"r{n}", 4 * s, 4 * s + 4)
        except BaseException as error:  # a thread's exception would otherwise pass the test unseen
            failures.append(error)

    writers = [threading.Thread(target=write_batches, args=(r, n)) for n, r in enumerate(replicas)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert failures == []
    for r in replicas:
        r.sync()
    late = replica(redis_url, redis_namespace)
    for r in replicas:
        assert_same_index(r, late)
        r.close()
    late.close()
    client = redis.Redis.from_url(redis_url)
    assert len(client.smembers(f"{redis_namespace}:generations")) <= 3
    client.close()


def test_a_replica_starts_over_when_redis_lost_the_namespace(redis_url: str, redis_namespace: str) -> None:
    """A flushed Redis is the source of truth too: the replica empties itself and keeps working."""
    a = replica(redis_url, redis_namespace)
    write(a, "a", 0, 5)
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.scan_iter(f"{redis_namespace}:*"))
    client.close()
    wait_until(lambda: len(a) == 0, what="the follower to notice the lost namespace")
    write(a, "again", 0, 3)
    assert "again-2" in a and seq(a) == 1
    fresh = replica(redis_url, redis_namespace)
    assert_same_index(fresh, a)
    a.close()
    fresh.close()

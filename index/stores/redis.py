"""The shared store: one index in Redis, written and followed by every service replica.

Redis is the source of truth.  Keys, all under `<namespace>:`:

    meta             hash: format, fingerprint (JSON)
    head             hash: seq (the last appended), bytes (payload bytes ever appended)
    log              stream: entry id "<seq>-0", field "batch" = Batch.encode()
    snapshot         hash: gen, seq, bytes (head.bytes when it became current) - the pointer
    snapshot:<gen>   hash: "layout" (JSON: seq, count, words, section sizes, CRC32s, chunk counts)
                     and "<section>:<i>" chunks of at most 1 MiB
    generations      set: the generations that have a snapshot:<gen> hash
    next-generation  counter

Appends are one Lua script (next seq, XADD with id "<seq>-0"), so every replica
reads the same entries in the same order, and seq -> stream position needs no
bookkeeping.  A snapshot is written under a fresh generation and becomes
current only if it is newer than the current one; the stream is then trimmed
up to the *previous* snapshot and older generations deleted.  Keeping one
snapshot interval of log means a replica a few entries behind catches up from
the log instead of reloading everything, and keeping the previous generation
means a replica that is loading it when a new one lands can finish.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from index.errors import CorruptStore, FingerprintMismatch, LogGap, StoreError
from index.stores import _layout
from index.stores.base import Batch, Fingerprint, Snapshot, Store

log = logging.getLogger(__name__)

# A Redis value holds at most 512 MB, and redis-py parses one large reply several times
# slower than many small ones (1 MiB: ~180 MB/s here, 64 MiB: ~85 MB/s).
CHUNK_BYTES = 1 << 20
_PAGE = 256  # log entries per XRANGE: bounds one reply while catching up
_LOAD_ATTEMPTS = 5

# Refuses to write into a namespace that lost its index (Redis flushed, or restarted without
# persistence): the entry would start a new log that no replica's state matches.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOINDEX the index is gone from Redis (flushed, or restarted without persistence?)')
end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') + 1
redis.call('XADD', KEYS[3], string.format('%d-0', seq), 'batch', ARGV[1])
local total = redis.call('HINCRBY', KEYS[2], 'bytes', string.len(ARGV[1]))
redis.call('HSET', KEYS[2], 'seq', seq)
return {seq, total}
"""

_CREATE_META = """
if redis.call('EXISTS', KEYS[1]) == 0 and ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'format', ARGV[1], 'fingerprint', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'format', 'fingerprint')
"""

# Only a newer, complete generation becomes current (a generation deleted while it was being
# written has lost fields); the log then loses what the previous snapshot already holds.
_SWITCH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if tonumber(ARGV[2]) <= current or redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[3]) then
  return {0, 0}
end
local previous = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local bytes = redis.call('HGET', KEYS[3], 'bytes') or '0'
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'seq', ARGV[2], 'bytes', bytes)
if current > 0 then
  redis.call('XTRIM', KEYS[4], 'MINID', string.format('%d-0', current + 1))
end
return {1, previous}
"""


class RedisStore(Store):
    """An index shared through Redis by every replica that opens the same URL and namespace.

    A snapshot is due once `snapshot_after_entries` entries or
    `snapshot_after_bytes` of batches were logged since the current one.
    Connection failures surface as StoreError; commands are never retried
    blindly, since an append whose reply was lost may have been applied.
    """

    shared = True

    def __init__(self, url: str, *, namespace: str = "deephash", snapshot_after_entries: int = 10_000,
                 snapshot_after_bytes: int = 64 << 20, socket_timeout: float = 5.0,
                 socket_connect_timeout: float = 2.0) -> None:
        self.namespace = namespace
        self.snapshot_after_entries = snapshot_after_entries
        self.snapshot_after_bytes = snapshot_after_bytes
        self.socket_timeout = socket_timeout
        self._location = f"{_without_secrets(url)} (namespace {namespace!r})"
        # A stale pooled connection (after a Redis restart) is replaced by the pool before use.
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                            socket_connect_timeout=socket_connect_timeout,
                                            retry=Retry(NoBackoff(), 0))
        self._append = self._client.register_script(_APPEND)
        self._create_meta = self._client.register_script(_CREATE_META)
        self._switch = self._client.register_script(_SWITCH)
        self._head = (0, 0)  # (seq, bytes) as of this replica's last look
        self._snapshot_mark = (0, 0)  # (seq, head bytes) of the current snapshot

    @property
    def location(self) -> str:
        return self._location

    def _key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    # ------------------------------------------------------------- contract

    def open(self, fingerprint: Fingerprint | None) -> tuple[Fingerprint, Snapshot | None]:
        with self._redis_errors("opening the index"):
            wanted = json.dumps(fingerprint.to_dict()) if fingerprint is not None else ""
            stored_format, stored_raw = self._create_meta(keys=[self._key("meta")],
                                                          args=[_layout.FORMAT_VERSION, wanted])
            stored = self._check_meta(stored_format, stored_raw, fingerprint)
            snapshot = self._load_snapshot()
            seq, nbytes = self._client.hmget(self._key("head"), "seq", "bytes")
            self._head = (int(seq or 0), int(nbytes or 0))
        return stored, snapshot

    def append(self, batch: Batch) -> int:
        payload = batch.encode()
        with self._redis_errors("appending to the log"):
            seq, total = self._append(keys=[self._key("meta"), self._key("head"), self._key("log")], args=[payload])
        self._head = (int(seq), int(total))
        return int(seq)

    def read_log(self, after: int, timeout: float = 0.0) -> list[tuple[int, Batch]]:
        with self._redis_errors("reading the log"):
            if timeout > 0:
                # XREAD answers at once when entries are there; only wait, then read them all below.
                block_ms = max(1, int(1000 * min(timeout, self.socket_timeout / 2)))
                self._client.xread({self._key("log"): f"{after}-0"}, count=1, block=block_ms)
            return self._entries_after(after)

    def should_snapshot(self) -> bool:
        if not self._snapshot_due():
            return False
        try:  # another replica may have written one since this one last looked
            with self._redis_errors("reading the snapshot pointer"):
                self._read_pointer()
        except StoreError as exc:
            log.warning("%s; not snapshotting now", exc)
            return False
        return self._snapshot_due()

    def write_snapshot(self, snapshot: Snapshot) -> None:
        with self._redis_errors("writing a snapshot"):
            generation = int(self._client.incr(self._key("next-generation")))
            self._client.sadd(self._key("generations"), generation)
            key = self._key(f"snapshot:{generation}")
            try:
                fields = self._write_generation(key, snapshot)
                switched, previous = self._switch(
                    keys=[self._key("snapshot"), key, self._key("head"), self._key("log")],
                    args=[generation, snapshot.seq, fields])
            except BaseException:
                with suppress(redis.RedisError):  # else the next snapshot deletes it
                    self._drop_generations([generation])
                raise
            if switched:
                # Generation numbers are taken before writing, so a lower-seq snapshot with a higher number may
                # have been current before this one: older than `previous` can include this very generation.
                older = [int(g) for g in self._client.smembers(self._key("generations"))
                         if int(g) < int(previous) and int(g) != generation]
                self._drop_generations(older)
            else:
                log.info("%s: snapshot at seq %d is not newer than the current one; dropped",
                         self.location, snapshot.seq)
                self._drop_generations([generation])
            self._read_pointer()

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ internals

    def _check_meta(self, stored_format: bytes | None, stored_raw: bytes | None,
                    fingerprint: Fingerprint | None) -> Fingerprint:
        if stored_raw is None:
            raise ValueError(f"{self.location} holds no index yet: a new index needs its bits and model id")
        if stored_format != str(_layout.FORMAT_VERSION).encode():
            raise CorruptStore(f"{self.location}: {self._key('meta')} has format version {stored_format!r}; "
                               f"this build reads version {_layout.FORMAT_VERSION}")
        try:
            stored = Fingerprint.from_dict(json.loads(stored_raw))
        except (ValueError, TypeError, CorruptStore) as exc:
            raise CorruptStore(f"{self.location}: {self._key('meta')} holds no valid fingerprint ({exc})") from None
        if fingerprint is not None and fingerprint != stored:
            raise FingerprintMismatch(
                f"{self.location} holds an index of {stored.bits}-bit codes from model {stored.model_id!r}, "
                f"but {fingerprint.bits}-bit codes from model {fingerprint.model_id!r} were asked for; "
                f"index into another namespace, or delete the keys {self.namespace}:* to re-index here")
        return stored

    def _entries_after(self, after: int) -> list[tuple[int, Batch]]:
        """Every entry after `after`, or LogGap when some of them are gone."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.xrange(self._key("log"), min=f"{after + 1}-0", count=_PAGE)
            pipe.hget(self._key("head"), "seq")
            page, head = pipe.execute()
        head = int(head or 0)
        if not page and head != after:
            raise LogGap(f"{self.location}: the log ends at seq {head}, but entries after {after} were asked for "
                         + ("and are trimmed" if head > after else "(the index in Redis was reset)"))
        entries: list[tuple[int, Batch]] = []
        while page:
            for entry_id, fields in page:
                seq = int(entry_id.split(b"-")[0])
                if seq != after + len(entries) + 1:
                    raise LogGap(f"{self.location}: entry {after + len(entries) + 1} is gone from the log")
                entries.append((seq, self._decode(seq, fields)))
            if len(page) < _PAGE:
                break
            page = self._client.xrange(self._key("log"), min=f"{entries[-1][0] + 1}-0", count=_PAGE)
        return entries

    def _decode(self, seq: int, fields: dict[bytes, bytes]) -> Batch:
        try:
            return Batch.decode(fields[b"batch"])
        except (KeyError, CorruptStore) as exc:
            raise CorruptStore(f"{self.location}: log entry {seq} is unreadable ({exc!r})") from None

    def _snapshot_due(self) -> bool:
        entries = self._head[0] - self._snapshot_mark[0]
        nbytes = self._head[1] - self._snapshot_mark[1]
        return entries >= self.snapshot_after_entries or nbytes >= self.snapshot_after_bytes

    def _read_pointer(self) -> tuple[int | None, int]:
        """The current snapshot's generation (None when there is none) and seq; remembers its mark."""
        generation, seq, nbytes = self._client.hmget(self._key("snapshot"), "gen", "seq", "bytes")
        self._snapshot_mark = (int(seq or 0), int(nbytes or 0))
        return (int(generation) if generation is not None else None), int(seq or 0)

    def _load_snapshot(self) -> Snapshot | None:
        generation, _ = self._read_pointer()
        for _ in range(_LOAD_ATTEMPTS):
            if generation is None:
                return None
            snapshot = self._read_generation(generation)
            if snapshot is not None:
                return snapshot
            current, _ = self._read_pointer()
            if current == generation:
                raise CorruptStore(f"{self.location}: the current snapshot {self._key(f'snapshot:{generation}')} "
                                   "is incomplete")
            generation = current  # a newer snapshot replaced it while it was being read
        raise StoreError(f"{self.location}: snapshots were replaced faster than one could be read")

    def _read_generation(self, generation: int) -> Snapshot | None:
        """The snapshot of a generation, or None if it was deleted (replaced) under the reader."""
        key = self._key(f"snapshot:{generation}")
        raw = self._client.hget(key, "layout")
        if raw is None:
            return None
        try:
            layout = json.loads(raw)
            chunks = {name: int(layout["chunks"][name]) for name in _layout.SECTIONS}
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStore(f"{self.location}: {key} has an unreadable layout ({exc!r})") from None
        data: dict[str, bytes] = {}
        for name in _layout.SECTIONS:
            # chunk by chunk: Redis buffers a whole reply, and one for a whole snapshot could be gigabytes
            parts = [self._client.hget(key, f"{name}:{i}") for i in range(chunks[name])]
            if None in parts:
                return None
            data[name] = b"".join(parts)
        return _layout.assemble(layout, data, key)

    def _write_generation(self, key: str, snapshot: Snapshot) -> int:
        """Write the snapshot's chunks, then its layout (last, so a complete hash has one); returns the field count."""
        data = _layout.sections(snapshot)
        layout = _layout.describe(snapshot, data)
        layout["chunks"] = {name: math.ceil(len(data[name]) / CHUNK_BYTES) for name in _layout.SECTIONS}
        with self._client.pipeline(transaction=False) as pipe:
            for name in _layout.SECTIONS:
                for i in range(layout["chunks"][name]):
                    pipe.hset(key, f"{name}:{i}", memoryview(data[name][i * CHUNK_BYTES: (i + 1) * CHUNK_BYTES]))
            pipe.hset(key, "layout", json.dumps(layout))
            pipe.execute()
        return 1 + sum(layout["chunks"].values())

    def _drop_generations(self, generations: list[int]) -> None:
        if not generations:
            return
        # UNLINK frees a large hash off Redis's main thread
        self._client.unlink(*(self._key(f"snapshot:{g}") for g in generations))
        self._client.srem(self._key("generations"), *generations)

    @contextmanager
    def _redis_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"Redis at {self.location}: {action} failed: {exc}") from exc


def _without_secrets(url: str) -> str:
    """The URL without its password (in the netloc or the query string)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"

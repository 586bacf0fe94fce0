"""The Hamming index: exact search over packed binary codes, with string ids and metadata.

A handful of verbs in the manner of FAISS (add, upsert, remove, get, search,
range_search, reset), numpy in and out, no torch.  Every change goes to the
store first and is applied from the store's log, so a process that reopens
the store, or a replica that follows it, ends with the same rows in the same
order.  Ties in distance are broken by row order, which is the order in
which ids were first added; search results are therefore deterministic.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from index import codes as codecs
from index import kernels
from index._columns import BytesColumn, IdColumn
from index._rwlock import ReadWriteLock
from index.errors import CorruptStore, LogGap, StoreError
from index.stores.base import Batch, Fingerprint, Op, Snapshot, Store
from index.stores.memory import MemoryStore

log = logging.getLogger(__name__)

MAX_ID_BYTES = 512
MAX_K = 10_000
# Times a replica reloads the snapshot when the log it would read on from keeps being compacted away.
LOG_GAP_RELOADS = 5


@dataclass(frozen=True)
class Hit:
    id: str
    distance: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Item:
    id: str
    code: bytes  # packed, np.packbits order
    metadata: dict[str, Any]


@dataclass
class SearchResult:
    """Parallel [n_queries, k] arrays; distance -1 and id None mark empty slots.

    Metadata stays raw JSON until asked for: decoding it costs more than the
    scan itself for large k, and many callers only need ids and distances.
    """

    distances: np.ndarray  # int32
    ids: np.ndarray  # object (str or None)
    raw_metadata: list[list[bytes | None]]

    @cached_property
    def metadata(self) -> list[list[dict[str, Any] | None]]:
        return [[None if raw is None else _decode_json(raw) for raw in row] for row in self.raw_metadata]

    def hits(self, query: int) -> list[Hit]:
        return [Hit(i, int(d), _decode_json(m))
                for i, d, m in zip(self.ids[query], self.distances[query], self.raw_metadata[query])
                if i is not None]


@dataclass(frozen=True)
class RangeResult:
    """FAISS layout: the hits of query q are [lims[q], lims[q+1]) of the flat arrays."""

    lims: np.ndarray  # int64 [n_queries + 1]
    distances: np.ndarray  # int32
    ids: list[str]
    metadata: list[dict[str, Any]]

    def hits(self, query: int) -> list[Hit]:
        lo, hi = int(self.lims[query]), int(self.lims[query + 1])
        return [Hit(self.ids[i], int(self.distances[i]), self.metadata[i]) for i in range(lo, hi)]


class HammingIndex:
    """Exact nearest neighbours by Hamming distance.

    `store` is where the index persists (index.stores.open_store builds one
    from a path or URL); without one it lives in memory only.  Opening an
    existing store with another model's fingerprint raises
    FingerprintMismatch.
    """

    def __init__(self, bits: int | None = None, model_id: str | None = None, *, store: Store | None = None,
                 threads: int | None = None, max_metadata_bytes: int = 64 * 1024,
                 follow_interval: float = 1.0) -> None:
        wanted = None
        if bits is not None:
            wanted = Fingerprint(codecs.check_bits(bits), model_id or "")
        self.store = store or MemoryStore()
        self.fingerprint, snapshot = self.store.open(wanted)
        self.bits = self.fingerprint.bits
        self.words = codecs.words_for(self.bits)
        self.threads = threads or kernels.default_threads()
        self.max_metadata_bytes = max_metadata_bytes
        self._lock = ReadWriteLock()  # searches vs in-memory changes
        self._seq = 0  # last log entry applied
        self._snapshot_seq = 0  # last snapshot this process loaded or wrote
        self._write_mutex = threading.RLock()  # one writer at a time, store then memory
        with self._lock.write():
            self._load(snapshot)
        self._catch_up()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        if self.store.shared:
            self._follower = threading.Thread(target=self._follow, args=(follow_interval,),
                                              name="index-follower", daemon=True)
            self._follower.start()

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return self._n - self._n_dead

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        with self._lock.read():
            return bool(self._rows([item_id])[0] >= 0)

    def get(self, item_id: str) -> Item:
        with self._lock.read():
            row = int(self._rows([item_id])[0])
            if row < 0:
                raise KeyError(item_id)
            return Item(item_id, codecs.unpack_bytes(self._codes[row: row + 1], self.bits)[0].tobytes(),
                        _decode_json(self._meta.get(row)))

    def search(self, queries: np.ndarray, k: int, max_distance: int | None = None) -> SearchResult:
        """Exact top-k per query, nearest first; at most k hits within max_distance."""
        q = codecs.pack(queries, self.bits)
        k = _check_count("k", k, MAX_K)
        limit = self._limit(max_distance)
        with self._lock.read():
            n = self._n
            dist, rows = kernels.knn(self._codes, n, q, min(k, max(n, 1)), limit,
                                     self._dead if self._n_dead else None, self.threads)
            found = rows >= 0
            hit_rows = rows[found]
            hit_ids = [b.decode("utf-8") for b in self._ids.get_many(hit_rows)]
            hit_meta = self._meta.get_many(hit_rows)
        ids = np.full((len(q), k), None, dtype=object)
        out_dist = np.full((len(q), k), -1, dtype=np.int32)
        metadata: list[list[bytes | None]] = [[None] * k for _ in range(len(q))]
        if hit_ids:
            width = dist.shape[1]
            found_k = np.zeros((len(q), k), dtype=bool)
            found_k[:, :width] = found
            ids[found_k] = hit_ids
            out_dist[found_k] = dist[found]
            for (qi, ri), meta in zip(np.argwhere(found).tolist(), hit_meta):
                metadata[qi][ri] = meta
        return SearchResult(out_dist, ids, metadata)

    def range_search(self, queries: np.ndarray, radius: int, max_results: int | None = None) -> RangeResult:
        """Every item within `radius` of each query, nearest first (at most max_results each)."""
        q = codecs.pack(queries, self.bits)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if max_results is not None:
            max_results = _check_count("max_results", max_results, None)
        with self._lock.read():
            lims, rows, distances = kernels.within(self._codes, self._n, q, min(radius, self.bits), max_results,
                                                   self._dead if self._n_dead else None, self.threads)
            ids = [b.decode("utf-8") for b in self._ids.get_many(rows)]
            metadata = [_decode_json(b) for b in self._meta.get_many(rows)]
        return RangeResult(lims, distances, ids, metadata)

    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            memory = (self._codes.nbytes + self._dead.nbytes + self._ids.nbytes() + self._meta.nbytes())
            return {"count": len(self), "bits": self.bits, "model_id": self.fingerprint.model_id,
                    "rows": self._n, "deleted_rows": self._n_dead, "seq": self._seq,
                    "memory_bytes": int(memory), "store": self.store.location, "kernel": kernels.SIMD,
                    "threads": self.threads}

    # ----------------------------------------------------------------- writes

    def add(self, ids: Sequence[str], codes: np.ndarray,
            metadata: Sequence[Mapping[str, Any] | None] | None = None) -> None:
        """Insert new items; KeyError (and nothing written) if any id is already present."""
        batch = self._upsert_batch(ids, codes, metadata)
        with self._write_mutex:
            present = [i for i, row in zip(batch.ids, self._rows(batch.ids)) if row >= 0]
            if present:
                raise KeyError(f"ids already in the index: {present[:5]}")
            self._commit(batch)

    def upsert(self, ids: Sequence[str], codes: np.ndarray,
               metadata: Sequence[Mapping[str, Any] | None] | None = None) -> int:
        """Insert or replace items (an existing id keeps its place in tie order).  Returns how many were new."""
        batch = self._upsert_batch(ids, codes, metadata)
        with self._write_mutex:
            new = int((self._rows(batch.ids) < 0).sum())
            self._commit(batch)
        return new

    def remove(self, ids: Iterable[str]) -> int:
        """Delete items by id; unknown ids are skipped.  Returns how many were removed."""
        ids = _check_ids(list(ids), allow_duplicates=True)
        with self._write_mutex:
            present = sorted({i for i, row in zip(ids, self._rows(ids)) if row >= 0})
            if present:
                self._commit(Batch(Op.REMOVE, present))
        return len(present)

    def reset(self) -> None:
        """Remove every item (the fingerprint stays)."""
        with self._write_mutex:
            self._commit(Batch(Op.RESET))

    def checkpoint(self) -> None:
        """Write a snapshot now, so a restart loads it instead of replaying the log (graceful shutdown).

        Nothing is written when this process has applied nothing since its last snapshot.
        """
        with self._write_mutex:
            if self._seq != self._snapshot_seq:
                self._write_snapshot()

    def sync(self) -> None:
        """Apply what other writers have logged since the last look (replicas do this on their own)."""
        with self._write_mutex:
            self._catch_up()

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        with self._write_mutex:
            self.store.close()

    def __enter__(self) -> "HammingIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- internals

    def _limit(self, max_distance: int | None) -> int:
        if max_distance is None:
            return self.bits + 1
        if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)) or max_distance < 0:
            raise ValueError(f"max_distance must be a non-negative integer, got {max_distance!r}")
        return min(int(max_distance), self.bits) + 1

    def _rows(self, ids: Sequence[str]) -> np.ndarray:
        return self._ids.lookup(ids)

    def _upsert_batch(self, ids: Sequence[str], codes: np.ndarray,
                      metadata: Sequence[Mapping[str, Any] | None] | None) -> Batch:
        ids = _check_ids(list(ids), allow_duplicates=False)
        packed = codecs.pack(codes, self.bits)
        if len(packed) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(packed)} codes")
        if metadata is None:
            metadata = [None] * len(ids)
        if len(metadata) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(metadata)} metadata objects")
        return Batch(Op.UPSERT, ids, packed, [self._encode_metadata(i, m) for i, m in zip(ids, metadata)])

    def _encode_metadata(self, item_id: str, meta: Mapping[str, Any] | None) -> bytes:
        if meta is None:
            return b"{}"
        if not isinstance(meta, Mapping):
            raise ValueError(f"metadata of {item_id!r} must be a JSON object, got {type(meta).__name__}")
        try:
            raw = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata of {item_id!r} is not JSON-serialisable: {exc}") from None
        if len(raw) > self.max_metadata_bytes:
            raise ValueError(f"metadata of {item_id!r} is {len(raw)} bytes; the limit is {self.max_metadata_bytes}")
        return raw

    def _commit(self, batch: Batch) -> None:
        """Log first, then apply from the log: what memory holds was durable first."""
        self.store.append(batch)
        self._catch_up()
        if self.store.should_snapshot():
            try:
                self._write_snapshot()
            except StoreError:
                # the write is already durable in the log; a later commit tries the snapshot again
                log.exception("writing a snapshot of the index failed")

    def _read_log(self, timeout: float = 0.0) -> list[tuple[int, Batch]]:
        try:
            return self.store.read_log(self._seq, timeout)
        except LogGap:
            with self._write_mutex:
                # Another replica may compact the log again between our loading its snapshot and reading on from it.
                for _ in range(LOG_GAP_RELOADS - 1):
                    self._reload_from_store()
                    try:
                        return self.store.read_log(self._seq)
                    except LogGap:
                        continue
                self._reload_from_store()
                return self.store.read_log(self._seq)

    def _reload_from_store(self) -> None:
        """Replace memory with the store's snapshot, after the log entries beyond ours were compacted away."""
        log.warning("log entries after %d are gone; reloading the index from its store", self._seq)
        snapshot = self.store.open(self.fingerprint)[1]
        with self._lock.write():
            self._load(snapshot)
            if snapshot is None:  # the store lost everything: start over with it
                self._seq = 0

    def _catch_up(self, entries: list[tuple[int, Batch]] | None = None) -> None:
        """Apply log entries in order; entries read earlier may already be applied and are skipped."""
        with self._write_mutex:
            if entries is None:
                entries = self._read_log()
            entries = [(seq, batch) for seq, batch in entries if seq > self._seq]
            if not entries:
                return
            with self._lock.write():
                for seq, batch in entries:
                    if seq != self._seq + 1:
                        raise LogGap(f"log jumps from {self._seq} to {seq}")
                    self._apply(batch)
                    self._seq = seq
                self._maybe_compact()

    def _follow(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                # wait for new entries without holding the writer's mutex
                self._catch_up(self._read_log(timeout=interval))
            except Exception:  # noqa: BLE001 - a follower must outlive a store outage
                log.exception("following the index store failed; retrying")
                self._stop.wait(interval)

    def _load(self, snapshot: Snapshot | None) -> None:
        """Replace the whole state (callers hold the write lock); None means empty."""
        if snapshot is None:
            self._codes = np.zeros((0, self.words), dtype=np.uint64)
            self._ids = IdColumn()
            self._meta = BytesColumn()
        else:
            snapshot.validate(self.words)
            self._seq = self._snapshot_seq = snapshot.seq
            self._codes = _owned(snapshot.codes, np.uint64)
            self._ids = IdColumn.from_arrays(snapshot.id_blob, snapshot.id_lens)
            self._meta = BytesColumn.from_arrays(snapshot.meta_blob, snapshot.meta_lens)
            if self._ids.live != len(snapshot):
                raise CorruptStore("snapshot holds duplicate ids")
        self._n = len(self._codes)
        self._dead = np.zeros(len(self._codes), dtype=np.uint8)
        self._n_dead = 0

    def _apply(self, batch: Batch) -> None:
        if batch.op is Op.RESET:
            self._load(None)
            return
        rows = self._rows(batch.ids)
        if batch.op is Op.REMOVE:
            rows = np.unique(rows[rows >= 0])
            self._ids.remove(rows)
            self._dead[rows] = 1
            self._n_dead += len(rows)
            return
        old = rows >= 0
        if old.any():
            self._codes[rows[old]] = batch.codes[old]
            self._meta.assign(rows[old], [m for m, o in zip(batch.metadata, old) if o])
        new = ~old
        if new.any():
            fresh = self._ids.append([i.encode("utf-8") for i, n in zip(batch.ids, new) if n])
            self._meta.append([m for m, n in zip(batch.metadata, new) if n])
            end = self._n + len(fresh)
            if end > len(self._codes):
                capacity = max(end, 2 * len(self._codes), 1024)
                self._codes = np.concatenate([self._codes, np.zeros((capacity - len(self._codes), self.words),
                                                                    dtype=np.uint64)])
                self._dead = np.concatenate([self._dead, np.zeros(capacity - len(self._dead), dtype=np.uint8)])
            self._codes[self._n: end] = batch.codes[new]
            self._n = end
            self._ids.insert(fresh)

    def _maybe_compact(self) -> None:
        """Drop deleted rows once they are a quarter of the scan, and rewritten metadata
        once it is half the blob (row order is kept)."""
        dead_rows = self._n_dead >= max(1024, self._n // 4)
        stale_meta = self._meta.garbage >= max(1 << 24, len(self._meta.blob) // 2)
        if not (dead_rows or stale_meta):
            return
        keep = np.flatnonzero(self._dead[: self._n] == 0)
        self._codes = self._codes[keep].copy()
        self._ids = self._ids.compacted(keep)
        self._meta = self._meta.compacted(keep)
        self._n = len(keep)
        self._dead = np.zeros(self._n, dtype=np.uint8)
        self._n_dead = 0

    def _write_snapshot(self) -> None:
        snapshot = self._snapshot()
        self.store.write_snapshot(snapshot)
        self._snapshot_seq = snapshot.seq

    def _snapshot(self) -> Snapshot:
        with self._lock.read():
            keep = np.flatnonzero(self._dead[: self._n] == 0)
            id_blob, id_lens = self._ids.export(keep)
            meta_blob, meta_lens = self._meta.export(keep)
            return Snapshot(self._seq, self._codes[keep], id_blob, id_lens, meta_blob, meta_lens)


def _owned(arr: np.ndarray, dtype: type) -> np.ndarray:
    """The array itself when the index may keep and write it, else a copy (snapshots can be large)."""
    if arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable:
        return arr
    return np.array(arr, dtype=dtype, order="C")


_json_decoder = json.JSONDecoder()


def _decode_json(raw: bytes) -> dict[str, Any]:
    # every stored value was written by json.dumps as UTF-8, so skip loads()'s encoding sniffing
    return {} if raw == b"{}" else _json_decoder.decode(raw.decode("utf-8"))


def _check_count(name: str, value: int, upper: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value}")
    return int(value)


def _check_ids(ids: list[str], allow_duplicates: bool) -> list[str]:
    for item_id in ids:
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"ids must be non-empty strings, got {item_id!r}")
        try:
            size = len(item_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"id {item_id!r} is not valid Unicode") from None
        if size > MAX_ID_BYTES:
            raise ValueError(f"id {item_id[:40]!r}... is {size} bytes; the limit is {MAX_ID_BYTES}")
    if not allow_duplicates and len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = sorted({i for i in ids if i in seen or seen.add(i)})
        raise ValueError(f"duplicate ids in one batch: {dupes[:5]}")
    return ids

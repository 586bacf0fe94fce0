"""The contract between the in-memory index and where it persists.

A store holds one index as a snapshot plus an ordered log of batches, each
batch numbered by a sequence number that grows by one.  The index applies
the log in order, so every process that reads the same store ends with the
same rows in the same order (and therefore the same tie order in search).
"""
from __future__ import annotations

import enum
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from index.errors import CorruptStore


@dataclass(frozen=True)
class Fingerprint:
    """What produced the codes: their length and the model's id."""

    bits: int
    model_id: str

    def to_dict(self) -> dict:
        return {"bits": self.bits, "model_id": self.model_id}

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        try:
            return cls(bits=int(data["bits"]), model_id=str(data["model_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStore(f"invalid index fingerprint {data!r}") from exc


class Op(enum.IntEnum):
    UPSERT = 1
    REMOVE = 2
    RESET = 3


@dataclass
class Batch:
    """One atomic change: upsert items, remove ids, or remove everything."""

    op: Op
    ids: list[str] = field(default_factory=list)
    codes: np.ndarray | None = None  # uint64 [n, words], UPSERT only
    metadata: list[bytes] | None = None  # one JSON object per item, UPSERT only

    _HEADER = struct.Struct("<4sBIH")
    _MAGIC = b"HBT1"

    def encode(self) -> bytes:
        """Compact binary form for logs: header, ids, then codes and metadata."""
        words = 0 if self.codes is None else self.codes.shape[1]
        parts = [self._HEADER.pack(self._MAGIC, int(self.op), len(self.ids), words)]
        parts += _encode_strings([i.encode("utf-8") for i in self.ids])
        if self.op is Op.UPSERT:
            parts.append(np.ascontiguousarray(self.codes, dtype="<u8").tobytes())
            parts += _encode_strings(self.metadata or [])
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> "Batch":
        try:
            magic, op, n, words = cls._HEADER.unpack_from(data, 0)
            if magic != cls._MAGIC:
                raise ValueError("bad magic")
            pos = cls._HEADER.size
            raw_ids, pos = _decode_strings(data, pos, n)
            batch = cls(op=Op(op), ids=[i.decode("utf-8") for i in raw_ids])
            if batch.op is Op.UPSERT:
                size = n * words * 8
                if pos + size > len(data):
                    raise ValueError("codes truncated")
                batch.codes = np.frombuffer(data, dtype="<u8", count=n * words, offset=pos).astype(
                    np.uint64).reshape(n, words)
                batch.metadata, pos = _decode_strings(data, pos + size, n)
            if pos != len(data):
                raise ValueError("trailing bytes")
            return batch
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise CorruptStore(f"undecodable log entry ({exc})") from exc


def _encode_strings(values: list[bytes]) -> list[bytes]:
    return [np.fromiter((len(v) for v in values), dtype="<i4", count=len(values)).tobytes(), *values]


def _decode_strings(data: bytes, pos: int, n: int) -> tuple[list[bytes], int]:
    if pos + 4 * n > len(data):
        raise ValueError("lengths truncated")
    lens = np.frombuffer(data, dtype="<i4", count=n, offset=pos)
    pos += 4 * n
    if (lens < 0).any() or pos + int(lens.sum()) > len(data):
        raise ValueError("strings truncated")
    out = []
    for length in lens.tolist():
        out.append(data[pos: pos + length])
        pos += length
    return out, pos


@dataclass
class Snapshot:
    """The whole index as of log entry `seq`, live rows in row order."""

    seq: int
    codes: np.ndarray  # uint64 [n, words]
    id_blob: np.ndarray  # uint8: UTF-8 ids, concatenated
    id_lens: np.ndarray  # int32 [n]
    meta_blob: np.ndarray  # uint8: JSON metadata, concatenated
    meta_lens: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return len(self.codes)

    def validate(self, words: int) -> None:
        n = len(self.codes)
        if self.codes.ndim != 2 or self.codes.shape[1] != words:
            raise CorruptStore(f"snapshot codes have shape {self.codes.shape}, expected (n, {words})")
        if len(self.id_lens) != n or len(self.meta_lens) != n:
            raise CorruptStore("snapshot columns disagree on the number of items")
        if int(self.id_lens.sum(dtype=np.int64)) != len(self.id_blob) or \
                int(self.meta_lens.sum(dtype=np.int64)) != len(self.meta_blob):
            raise CorruptStore("snapshot blobs disagree with their lengths")


class Store(ABC):
    """Durable home of one index."""

    #: several processes may write to it at once (they then follow its log)
    shared: bool = False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the index lives, for messages and stats (no secrets)."""

    @abstractmethod
    def open(self, fingerprint: Fingerprint | None) -> tuple[Fingerprint, Snapshot | None]:
        """Create the store for `fingerprint` if it is new, else check that it matches.

        Returns the stored fingerprint and the latest snapshot (None when
        there is none yet; the log then starts at seq 1).  Raises
        FingerprintMismatch when the stored codes come from another model,
        CorruptStore when stored data fails its checks.
        """

    @abstractmethod
    def append(self, batch: Batch) -> int:
        """Add a batch at the end of the log; durable once this returns.  Returns its seq."""

    @abstractmethod
    def read_log(self, after: int, timeout: float = 0.0) -> list[tuple[int, Batch]]:
        """Log entries with seq > after, in order; waits up to `timeout` s for the first.

        Raises LogGap when entries after `after` are no longer available.
        """

    @abstractmethod
    def should_snapshot(self) -> bool:
        """The log has grown enough that a snapshot would pay for itself."""

    @abstractmethod
    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Persist `snapshot` (state as of snapshot.seq); log entries up to it may go."""

    def ping(self) -> bool:
        """The store answers (for readiness checks)."""
        return True

    def close(self) -> None:
        """Release files, locks and connections."""

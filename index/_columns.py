"""Per-row variable-length values (ids, metadata) without a Python object per row.

Ten million ids as Python strings in a dict cost well over a gigabyte and
seconds to build; as one byte blob with offsets, plus a compiled hash table
for id -> row, they cost little more than the bytes themselves.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index import kernels


def encode_all(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte strings -> (blob, starts, lens) for the kernel."""
    lens = np.fromiter((len(v) for v in values), dtype=np.int32, count=len(values))
    starts = np.zeros(len(values), dtype=np.int64)
    if len(values) > 1:
        np.cumsum(lens[:-1], out=starts[1:])
    blob = np.frombuffer(b"".join(values), dtype=np.uint8)
    return blob, starts, lens


def _grown(arr: np.ndarray, needed: int) -> np.ndarray:
    if needed <= len(arr):
        return arr
    out = np.zeros(max(needed, 2 * len(arr), 64), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class BytesColumn:
    """One byte string per row, stored append-only in a blob.

    Overwriting a row appends the new value and leaves the old bytes as
    garbage until the owner compacts; that keeps writes O(value size).
    """

    EXPORT_ROWS = 1 << 18

    def __init__(self) -> None:
        self._blob = np.zeros(0, dtype=np.uint8)
        self._used = 0
        self.starts = np.zeros(0, dtype=np.int64)
        self.lens = np.zeros(0, dtype=np.int32)
        self.n = 0
        self.garbage = 0  # bytes of overwritten values still in the blob

    @classmethod
    def from_arrays(cls, blob: np.ndarray, lens: np.ndarray) -> "BytesColumn":
        col = cls()
        col.lens = np.array(lens, dtype=np.int32)
        col.n = len(lens)
        col.starts = np.zeros(col.n, dtype=np.int64)
        if col.n > 1:
            np.cumsum(col.lens[:-1], out=col.starts[1:])
        total = int(col.lens.sum(dtype=np.int64))
        if total != len(blob):
            raise ValueError(f"column blob holds {len(blob)} bytes but its lengths add up to {total}")
        # blob is only ever written past its end (after _grown reallocates), so a read-only view is fine
        col._blob = np.asarray(blob, dtype=np.uint8)
        col._used = total
        return col

    @property
    def blob(self) -> np.ndarray:
        return self._blob[: self._used]

    def nbytes(self) -> int:
        return self._blob.nbytes + self.starts.nbytes + self.lens.nbytes

    def append(self, values: Sequence[bytes]) -> np.ndarray:
        rows = np.arange(self.n, self.n + len(values), dtype=np.int64)
        self.starts = _grown(self.starts, self.n + len(values))
        self.lens = _grown(self.lens, self.n + len(values))
        self.n += len(values)
        self.assign(rows, values)
        return rows

    def assign(self, rows: np.ndarray, values: Sequence[bytes]) -> None:
        blob, starts, lens = encode_all(values)
        self.garbage += int(self.lens[rows].sum(dtype=np.int64))
        self._blob = _grown(self._blob, self._used + len(blob))
        self._blob[self._used: self._used + len(blob)] = blob
        self.starts[rows] = starts + self._used
        self.lens[rows] = lens
        self._used += len(blob)

    def get(self, row: int) -> bytes:
        start = int(self.starts[row])
        return self._blob[start: start + int(self.lens[row])].tobytes()

    def get_many(self, rows: np.ndarray) -> list[bytes]:
        blob, lens = self.export(rows)
        raw = blob.tobytes()
        ends = np.cumsum(lens, dtype=np.int64).tolist()
        return [raw[end - n: end] for end, n in zip(ends, lens.tolist())]

    def export(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The values of `rows`, in that order, as a contiguous (blob, lens)."""
        lens = self.lens[rows]
        starts = self.starts[rows]
        if len(rows) == 0:
            return np.zeros(0, dtype=np.uint8), lens
        ends = starts + lens
        if starts[0] == 0 and np.array_equal(starts[1:], ends[:-1]):
            return self._blob[: ends[-1]].copy(), lens  # already contiguous: the usual snapshot case
        parts = []
        # gather in slices of rows so the per-byte offsets stay small at millions of rows
        for lo in range(0, len(rows), self.EXPORT_ROWS):
            s, n = starts[lo: lo + self.EXPORT_ROWS], lens[lo: lo + self.EXPORT_ROWS]
            out_starts = np.concatenate(([0], np.cumsum(n[:-1], dtype=np.int64)))
            offsets = np.repeat(s - out_starts, n) + np.arange(int(n.sum(dtype=np.int64)), dtype=np.int64)
            parts.append(self._blob[offsets])
        return np.concatenate(parts), lens

    def compacted(self, rows: np.ndarray) -> "BytesColumn":
        return BytesColumn.from_arrays(*self.export(rows))


class IdColumn(BytesColumn):
    """Ids (UTF-8) per row plus an open-addressing table from id to row.

    Only live rows are in the table: removing a row takes its id out of the
    table while its bytes stay in the column until compaction.
    """

    # Linear probing stays short below 3/4 full; at 10M ids this is 2**24 slots (128 MiB).
    MAX_LOAD = 0.75

    def __init__(self) -> None:
        super().__init__()
        self._slots = np.zeros(1024, dtype=np.uint64)
        self.live = 0

    @classmethod
    def from_arrays(cls, blob: np.ndarray, lens: np.ndarray) -> "IdColumn":
        col = cls()
        base = BytesColumn.from_arrays(blob, lens)
        col._blob, col._used, col.starts, col.lens, col.n = base._blob, base._used, base.starts, base.lens, base.n
        col._rebuild(np.arange(col.n, dtype=np.int64))
        return col

    def compacted(self, rows: np.ndarray) -> "IdColumn":
        return IdColumn.from_arrays(*self.export(rows))

    def nbytes(self) -> int:
        return super().nbytes() + self._slots.nbytes

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id, -1 where absent."""
        q_blob, q_starts, q_lens = encode_all([i.encode("utf-8") for i in ids])
        return kernels.id_lookup(self._slots, self.blob, self.starts[: self.n], self.lens[: self.n],
                                 q_blob, q_starts, q_lens)

    def insert(self, rows: np.ndarray) -> None:
        """Put rows (whose ids are not in the table) into the table."""
        if (self.live + len(rows)) > self.MAX_LOAD * len(self._slots):
            live_rows = self._live_rows()
            self._rebuild(np.concatenate([live_rows, rows]))
            return
        kernels.id_insert(self._slots, self.blob, self.starts[: self.n], self.lens[: self.n], rows)
        self.live += len(rows)

    def remove(self, rows: np.ndarray) -> None:
        kernels.id_remove(self._slots, self.blob, self.starts[: self.n], self.lens[: self.n], rows)
        self.live -= len(rows)

    def _live_rows(self) -> np.ndarray:
        entries = self._slots[self._slots != 0]
        return np.sort((entries & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1)

    def _rebuild(self, rows: np.ndarray) -> None:
        size = 1024
        while size * self.MAX_LOAD < len(rows):
            size *= 2
        self._slots = np.zeros(size, dtype=np.uint64)
        self.live = 0
        kernels.id_insert(self._slots, self.blob, self.starts[: self.n], self.lens[: self.n], rows)
        self.live = len(rows)

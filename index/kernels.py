"""Typed entry points to the compiled kernel (index/_kernel.c).

The C functions trust their buffers; this module is where shapes and dtypes
are made right, so nothing else in the package calls _kernel directly.
"""
from __future__ import annotations

import os

import numpy as np

from index import _kernel

SIMD: str = _kernel.simd


def default_threads() -> int:
    """Cores this process may use (the container's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def knn(db: np.ndarray, n: int, queries: np.ndarray, k: int, limit: int,
        dead: np.ndarray | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of db[:n] nearest to each query, ascending (distance, row).

    Only rows at distance < limit qualify.  Unfilled slots have row -1.
    `dead` (uint8 per row, nonzero = deleted) is consulted only for rows that
    would enter the top-k, so it costs nothing on the scan itself.
    """
    words = db.shape[1]
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    dist = np.empty((len(queries), k), dtype=np.int32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    if len(queries):
        _kernel.knn(db, n, words, queries, k, limit, dist, rows, dead, threads)
    return dist, rows


def distances(db: np.ndarray, n: int, query: np.ndarray) -> np.ndarray:
    """Hamming distance from one query to each of db[:n], as uint16."""
    out = np.empty(n, dtype=np.uint16)
    _kernel.distances(db, n, db.shape[1], np.ascontiguousarray(query, dtype=np.uint64), out)
    return out


def id_lookup(slots: np.ndarray, blob: np.ndarray, starts: np.ndarray, lens: np.ndarray,
              q_blob: np.ndarray, q_starts: np.ndarray, q_lens: np.ndarray) -> np.ndarray:
    rows = np.empty(len(q_starts), dtype=np.int64)
    _kernel.id_lookup(slots, blob, starts, lens, q_blob, q_starts, q_lens, rows)
    return rows


def id_insert(slots: np.ndarray, blob: np.ndarray, starts: np.ndarray, lens: np.ndarray,
              rows: np.ndarray) -> None:
    _kernel.id_insert(slots, blob, starts, lens, np.ascontiguousarray(rows, dtype=np.int64))


def id_remove(slots: np.ndarray, blob: np.ndarray, starts: np.ndarray, lens: np.ndarray,
              rows: np.ndarray) -> None:
    _kernel.id_remove(slots, blob, starts, lens, np.ascontiguousarray(rows, dtype=np.int64))

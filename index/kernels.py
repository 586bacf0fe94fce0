"""Typed entry points to the compiled kernel (index/_kernel.c).

The C functions trust their buffers; this module is where shapes and dtypes
are made right, so nothing else in the package calls _kernel directly.
"""
from __future__ import annotations

import os
import sys

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


def within(db: np.ndarray, n: int, queries: np.ndarray, radius: int, max_results: int | None = None,
           dead: np.ndarray | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of db[:n] within `radius` (0 to 64 x words) of each query, ascending (distance, row).

    FAISS's range-search layout: the hits of query q are [lims[q], lims[q+1])
    of `rows` (int64) and `distances` (int32), at most max_results each.
    """
    words = db.shape[1]
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    cap = sys.maxsize if max_results is None else max_results
    lims, rows, dist = _kernel.range(db, n, words, queries, radius, cap, dead, threads)
    return np.frombuffer(lims, dtype=np.int64), np.frombuffer(rows, dtype=np.int64), np.frombuffer(dist, dtype=np.int32)


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

"""Retrieval metrics over packed binary codes (and float features for the cosine ceiling).

Inputs: codes are uint8 [n, bits/8] in np.packbits order (most significant bit
first); labels are multi-hot [n, C] and two items are relevant iff they share
at least one label.

Ranking.  The database is ranked by Hamming distance ascending (cosine
similarity descending for float features) and ties are broken by database
index ascending: a stable sort.  Ties are the rule, not the exception, with
short codes (64 bits give 65 possible distances for 54,000 items), so an
unstable sort makes mAP depend on the sort algorithm.  Index order is also the
order the project's index returns equal-distance items in (earlier-added
first), so these numbers describe what the service actually serves.

Queries with no relevant item in the top R.  Their AP is 0 by default
(``queries_without_hits="zero"``), which is what DeepHash-pytorch's CalcTopMap
computes too: it skips them in the sum but still divides by the number of
queries.  HashNet's original evaluation script instead averages over the
queries that have at least one hit (``queries_without_hits="skip"``), which
can only raise the number; use it to compare with figures produced that way.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np

QueriesWithoutHits = Literal["zero", "skip"]

# Upper bound on query-chunk x database elements held at once (distances,
# sort order, relevance): about 100 MB of temporaries at this size.
_CHUNK_ELEMENTS = 1 << 22
_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


class RadiusPrecision(NamedTuple):
    """Precision within a Hamming radius, and how often that radius retrieves nothing.

    ``precision`` counts an empty result as precision 0; the mean over the
    queries that did retrieve something is ``precision / (1 - empty_fraction)``.
    """

    precision: float
    empty_fraction: float


class PRCurve(NamedTuple):
    """Precision and recall of "retrieve everything within radius r", for r = 0..bits.

    Precision is averaged over all queries with an empty result counted as 0
    (the same convention as RadiusPrecision); recall is averaged over the
    queries that have at least one relevant item in the database, because it is
    undefined for the others.
    """

    radius: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    empty_fraction: np.ndarray


# ---------------------------------------------------------------- distances


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """All query x database Hamming distances, int32 [nq, ndb]."""
    query_codes, db_codes = _check_codes(query_codes, db_codes)
    out = np.empty((len(query_codes), len(db_codes)), dtype=np.int32)
    for rows, distances in _hamming_chunks(query_codes, db_codes):
        out[rows] = distances
    return out


def _hamming_chunks(query_codes: np.ndarray, db_codes: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Distances one query chunk at a time, in the narrowest dtype that holds them (radix sort is faster on it)."""
    bits = query_codes.shape[1] * 8
    dtype = np.uint8 if bits <= np.iinfo(np.uint8).max else np.uint16
    query_words = _as_words(query_codes)
    db_words_by_column = np.ascontiguousarray(_as_words(db_codes).T)
    for rows in _query_chunks(len(query_codes), len(db_codes)):
        distances = np.zeros((rows.stop - rows.start, len(db_codes)), dtype=dtype)
        # One 64-bit word at a time keeps the XOR temporary at chunk x ndb.
        for word, db_column in enumerate(db_words_by_column):
            distances += _popcount(query_words[rows, word, None] ^ db_column[None, :])
        yield rows, distances


def _as_words(codes: np.ndarray) -> np.ndarray:
    """Packed bytes -> uint64 words, zero-padded: padding bits are equal in both codes, so XOR ignores them."""
    n_bytes = codes.shape[1]
    padded = np.zeros((len(codes), -(-n_bytes // 8) * 8), dtype=np.uint8)
    padded[:, :n_bytes] = codes
    return padded.view(np.uint64)


def _popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _popcount_by_bytes(words)


def _popcount_by_bytes(words: np.ndarray) -> np.ndarray:
    """numpy < 2 has no bitwise_count: look each byte up in a 256-entry table."""
    per_byte = _BYTE_POPCOUNT[np.ascontiguousarray(words).view(np.uint8)]
    return per_byte.reshape(*words.shape, words.itemsize).sum(axis=-1, dtype=np.uint8)


def _query_chunks(n_queries: int, n_db: int) -> Iterator[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(n_db, 1))
    for start in range(0, n_queries, size):
        yield slice(start, min(start + size, n_queries))


# ------------------------------------------------------------------ ranking


class RankingMetrics(NamedTuple):
    """mAP@R for each requested R (None = the whole database) and precision@N, from one ranking pass."""

    mean_average_precision: dict[int | None, float]
    precision_at_n: dict[int, float]


def ranking_metrics(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    topks: Sequence[int | None] = (None,),
    ns: Sequence[int] = (),
    *,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> RankingMetrics:
    """mAP@R and precision@N by Hamming ranking, sorting the database once per query.

    This is what the single-metric functions below call; use it directly when
    several metrics are wanted over a large database.
    """
    query_codes, db_codes = _check_codes(query_codes, db_codes)
    query_labels, db_labels = _check_labels(query_labels, db_labels, len(query_codes), len(db_codes))
    chunks = ((rows, np.argsort(d, axis=1, kind="stable")) for rows, d in _hamming_chunks(query_codes, db_codes))
    return _ranking_metrics(chunks, query_labels, db_labels, topks, ns, queries_without_hits)


def ranking_metrics_float(
    query_feats: np.ndarray,
    query_labels: np.ndarray,
    db_feats: np.ndarray,
    db_labels: np.ndarray,
    topks: Sequence[int | None] = (None,),
    ns: Sequence[int] = (),
    *,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> RankingMetrics:
    """The same metrics ranking by cosine similarity of float features (the ceiling a hash code approximates).

    Exactly equal similarities keep database order; similarities are float32,
    so two that differ only by rounding are ordered by the rounding.
    """
    query_feats, db_feats = _check_features(query_feats, db_feats)
    query_labels, db_labels = _check_labels(query_labels, db_labels, len(query_feats), len(db_feats))
    query_unit, db_unit = _unit_rows(query_feats), _unit_rows(db_feats)

    def chunks() -> Iterator[tuple[slice, np.ndarray]]:
        for rows in _query_chunks(len(query_unit), len(db_unit)):
            similarity = query_unit[rows] @ db_unit.T
            yield rows, np.argsort(-similarity, axis=1, kind="stable")

    return _ranking_metrics(chunks(), query_labels, db_labels, topks, ns, queries_without_hits)


def mean_average_precision(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    topk: int | None = None,
    *,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> float:
    """mAP@R with R = topk (None: the whole database, "mAP@all").

    AP@R = (1 / relevant items in the top R) * sum over those items of the
    precision at their rank, the definition used across the deep-hashing
    literature.  See the module docstring for ties and queries without hits.
    """
    metrics = ranking_metrics(query_codes, query_labels, db_codes, db_labels, (topk,),
                              queries_without_hits=queries_without_hits)
    return metrics.mean_average_precision[topk]


def mean_average_precision_float(
    query_feats: np.ndarray,
    query_labels: np.ndarray,
    db_feats: np.ndarray,
    db_labels: np.ndarray,
    topk: int | None = None,
    *,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> float:
    """mAP@R ranking by cosine similarity (descending, ties by database index)."""
    metrics = ranking_metrics_float(query_feats, query_labels, db_feats, db_labels, (topk,),
                                    queries_without_hits=queries_without_hits)
    return metrics.mean_average_precision[topk]


def precision_at_n(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    ns: Sequence[int] = (1, 10, 100, 1000),
) -> dict[int, float]:
    """Mean fraction of relevant items among the first N ranked; N beyond the database means the whole database."""
    return ranking_metrics(query_codes, query_labels, db_codes, db_labels, (), ns).precision_at_n


def _ranking_metrics(
    orders: Iterator[tuple[slice, np.ndarray]],
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    topks: Sequence[int | None],
    ns: Sequence[int],
    queries_without_hits: QueriesWithoutHits,
) -> RankingMetrics:
    if queries_without_hits not in ("zero", "skip"):
        raise ValueError(f"queries_without_hits must be 'zero' or 'skip', got {queries_without_hits!r}")
    n_db = len(db_labels)
    depths = {topk: _depth(topk, n_db, "topk") for topk in topks}
    n_depths = {n: _depth(n, n_db, "n") for n in ns}
    deepest = max([*depths.values(), *n_depths.values(), 1])

    ap_sums = dict.fromkeys(topks, 0.0)
    queries_with_hits = dict.fromkeys(topks, 0)
    precision_sums = dict.fromkeys(ns, 0.0)
    for rows, order in orders:
        relevant = _relevance(query_labels[rows], db_labels)
        ranked = np.take_along_axis(relevant, order[:, :deepest], axis=1)
        hits = np.cumsum(ranked, axis=1, dtype=np.int32)
        precision_at_rank = hits / np.arange(1, deepest + 1)
        for topk, depth in depths.items():
            n_hits = hits[:, depth - 1]
            ap_numerator = np.sum(precision_at_rank[:, :depth] * ranked[:, :depth], axis=1)
            ap_sums[topk] += float(np.sum(ap_numerator[n_hits > 0] / n_hits[n_hits > 0]))
            queries_with_hits[topk] += int(np.count_nonzero(n_hits))
        for n, depth in n_depths.items():
            precision_sums[n] += float(np.sum(hits[:, depth - 1] / depth))

    n_queries = len(query_labels)
    maps = {}
    for topk in topks:
        averaged_over = n_queries if queries_without_hits == "zero" else queries_with_hits[topk]
        maps[topk] = ap_sums[topk] / averaged_over if averaged_over else 0.0
    precisions = {n: precision_sums[n] / n_queries if n_queries else 0.0 for n in ns}
    return RankingMetrics(maps, precisions)


def _depth(cutoff: int | None, n_db: int, name: str) -> int:
    if cutoff is None:
        return n_db
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {cutoff!r}")
    return min(int(cutoff), n_db)


# ------------------------------------------------------------ radius metrics


def precision_within_radius(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    radius: int = 2,
) -> RadiusPrecision:
    """Precision of the items within Hamming distance <= radius (the paper's P@H<=2 at radius 2).

    A query that retrieves nothing counts as precision 0: a hash lookup that
    returns nothing has not helped the user, and dropping such queries would
    reward codes that scatter items far apart.  ``empty_fraction`` reports how
    many queries that was.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    curve = precision_recall_curve(query_codes, query_labels, db_codes, db_labels)
    r = min(int(radius), len(curve.radius) - 1)
    return RadiusPrecision(float(curve.precision[r]), float(curve.empty_fraction[r]))


def precision_recall_curve(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
) -> PRCurve:
    """Precision and recall at every Hamming radius 0..bits (conventions in PRCurve)."""
    query_codes, db_codes = _check_codes(query_codes, db_codes)
    query_labels, db_labels = _check_labels(query_labels, db_labels, len(query_codes), len(db_codes))
    bits = query_codes.shape[1] * 8
    n_queries = len(query_codes)
    precision_sum = np.zeros(bits + 1)
    recall_sum = np.zeros(bits + 1)
    empty_count = np.zeros(bits + 1, dtype=np.int64)
    queries_with_relevant = 0
    for rows, distances in _hamming_chunks(query_codes, db_codes):
        relevant = _relevance(query_labels[rows], db_labels)
        retrieved_within = np.cumsum(_histogram_by_row(distances, bits + 1), axis=1)
        relevant_within = np.cumsum(_histogram_by_row(distances, bits + 1, weights=relevant), axis=1)
        precision_sum += np.sum(np.divide(relevant_within, retrieved_within,
                                          out=np.zeros(retrieved_within.shape), where=retrieved_within > 0), axis=0)
        empty_count += np.sum(retrieved_within == 0, axis=0)
        relevant_total = relevant_within[:, -1]
        has_relevant = relevant_total > 0
        recall_sum += np.sum(relevant_within[has_relevant] / relevant_total[has_relevant, None], axis=0)
        queries_with_relevant += int(np.count_nonzero(has_relevant))
    return PRCurve(
        radius=np.arange(bits + 1),
        precision=precision_sum / n_queries if n_queries else precision_sum,
        recall=recall_sum / queries_with_relevant if queries_with_relevant else recall_sum,
        empty_fraction=empty_count / n_queries if n_queries else empty_count.astype(float),
    )


def _histogram_by_row(distances: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row bincount in one call: offset each row's values into its own block of bins."""
    offsets = (np.arange(len(distances)) * n_bins)[:, None]
    flat = (distances.astype(np.int64) + offsets).ravel()
    flat_weights = None if weights is None else weights.ravel()
    counts = np.bincount(flat, weights=flat_weights, minlength=len(distances) * n_bins)
    return counts.reshape(len(distances), n_bins).astype(np.int64)


# --------------------------------------------------------- input boundaries


def _relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    return (query_labels @ db_labels.T) > 0


def _unit_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # An all-zero feature has no direction: give it similarity 0 to everything.
    return features / np.maximum(norms, np.finfo(features.dtype).tiny)


def _check_codes(query_codes: np.ndarray, db_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    query_codes, db_codes = np.asarray(query_codes), np.asarray(db_codes)
    for name, codes in (("query_codes", query_codes), ("db_codes", db_codes)):
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] == 0:
            raise ValueError(f"{name} must be packed codes, uint8 [n, bits/8]; got {codes.dtype} {codes.shape}")
    if query_codes.shape[1] != db_codes.shape[1]:
        raise ValueError(f"query and database codes differ in length: {query_codes.shape[1]} vs {db_codes.shape[1]} bytes")
    if len(db_codes) == 0:
        raise ValueError("the database is empty: there is nothing to rank")
    return query_codes, db_codes


def _check_features(query_feats: np.ndarray, db_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    query_feats = np.asarray(query_feats, dtype=np.float32)
    db_feats = np.asarray(db_feats, dtype=np.float32)
    if query_feats.ndim != 2 or db_feats.ndim != 2 or query_feats.shape[1] != db_feats.shape[1]:
        raise ValueError(f"features must be float [n, F] with the same F; got {query_feats.shape} and {db_feats.shape}")
    if len(db_feats) == 0:
        raise ValueError("the database is empty: there is nothing to rank")
    return query_feats, db_feats


def _check_labels(query_labels: np.ndarray, db_labels: np.ndarray, n_queries: int, n_db: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot labels as float32, ready for the relevance product."""
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    for name, labels, n in (("query_labels", query_labels, n_queries), ("db_labels", db_labels, n_db)):
        if labels.ndim != 2 or len(labels) != n:
            raise ValueError(f"{name} must be multi-hot [{n}, C]; got {labels.shape}")
    if query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(f"query and database labels differ in classes: {query_labels.shape[1]} vs {db_labels.shape[1]}")
    return (query_labels != 0).astype(np.float32), (db_labels != 0).astype(np.float32)


"""The fast metrics must agree with slow, obviously-correct loops (and with answers worked out by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from model import metrics
from model.metrics import (
    hamming_distances,
    mean_average_precision,
    mean_average_precision_float,
    precision_at_n,
    precision_recall_curve,
    precision_within_radius,
    ranking_metrics,
)

# ------------------------------------------------------------ slow references


def ref_distance(a: np.ndarray, b: np.ndarray) -> int:
    return sum((int(x) ^ int(y)).bit_count() for x, y in zip(a, b))


def ref_relevant(query_label: np.ndarray, db_label: np.ndarray) -> bool:
    return any(q and d for q, d in zip(query_label, db_label))


def ref_ranking(query: np.ndarray, db: np.ndarray) -> list[int]:
    return sorted(range(len(db)), key=lambda j: (ref_distance(query, db[j]), j))


def ref_average_precision(relevant_in_rank_order: list[bool]) -> float | None:
    """None when nothing relevant was retrieved."""
    hits, total = 0, 0.0
    for position, relevant in enumerate(relevant_in_rank_order, start=1):
        if relevant:
            hits += 1
            total += hits / position
    return total / hits if hits else None


def ref_map(rankings: list[list[int]], q_labels, db_labels, topk, skip=False) -> float:
    aps = []
    for i, ranking in enumerate(rankings):
        cut = ranking if topk is None else ranking[:topk]
        ap = ref_average_precision([ref_relevant(q_labels[i], db_labels[j]) for j in cut])
        if ap is None and skip:
            continue
        aps.append(0.0 if ap is None else ap)
    return sum(aps) / len(aps) if aps else 0.0


def ref_precision_at(rankings, q_labels, db_labels, n) -> float:
    values = []
    for i, ranking in enumerate(rankings):
        cut = ranking[:n]
        values.append(sum(ref_relevant(q_labels[i], db_labels[j]) for j in cut) / len(cut))
    return sum(values) / len(values)


def ref_radius(q_codes, q_labels, db_codes, db_labels, radius):
    """(precision with empty = 0, recall over queries having relevant items, empty fraction)."""
    precisions, recalls, empty = [], [], 0
    for i in range(len(q_codes)):
        within = [j for j in range(len(db_codes)) if ref_distance(q_codes[i], db_codes[j]) <= radius]
        relevant_within = sum(ref_relevant(q_labels[i], db_labels[j]) for j in within)
        relevant_total = sum(ref_relevant(q_labels[i], db_labels[j]) for j in range(len(db_codes)))
        if within:
            precisions.append(relevant_within / len(within))
        else:
            precisions.append(0.0)
            empty += 1
        if relevant_total:
            recalls.append(relevant_within / relevant_total)
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    return sum(precisions) / len(precisions), recall, empty / len(q_codes)


def signs_of(codes: np.ndarray) -> np.ndarray:
    """Packed codes back to +-1 float vectors."""
    return np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1


# ----------------------------------------------------------------- fixtures


def random_problem(seed: int, n_queries=13, n_db=41, n_bytes=1, n_classes=4):
    """Short codes (many distance ties) and sparse labels (some queries with nothing relevant)."""
    rng = np.random.default_rng(seed)
    q_codes = rng.integers(0, 256, (n_queries, n_bytes), dtype=np.uint8)
    db_codes = rng.integers(0, 256, (n_db, n_bytes), dtype=np.uint8)
    db_codes[::5] = db_codes[0]  # exact duplicates: ties at every distance from them
    q_labels = (rng.random((n_queries, n_classes)) < 0.3).astype(np.int64)
    db_labels = (rng.random((n_db, n_classes)) < 0.3).astype(np.int64)
    q_labels[0] = 0  # a query relevant to nothing
    return q_codes, q_labels, db_codes, db_labels


@pytest.fixture(params=[0, 1, 2])
def problem(request):
    return random_problem(request.param)


@pytest.fixture(params=[1 << 22, 7], ids=["one-chunk", "many-chunks"])
def chunking(request, monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", request.param)


# ----------------------------------------------------------------- distances


@pytest.mark.parametrize("n_bytes", [1, 3, 8, 17, 33])
def test_hamming_distances_match_bit_loop(n_bytes, chunking):
    q_codes, _, db_codes, _ = random_problem(n_bytes, n_queries=5, n_db=9, n_bytes=n_bytes)
    expected = np.array([[ref_distance(q, d) for d in db_codes] for q in q_codes])
    got = hamming_distances(q_codes, db_codes)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_popcount_fallback_matches_numpy():
    words = np.random.default_rng(0).integers(0, 2**63, (6, 5), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    np.testing.assert_array_equal(metrics._popcount_by_bytes(words), np.bitwise_count(words))


def test_codes_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        hamming_distances(np.zeros((1, 8), np.uint8), np.zeros((1, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(np.zeros((1, 8), np.int64), np.zeros((1, 8), np.int64))


# --------------------------------------------------------------- hand-worked


def tiny_problem():
    """Query 0 (class A) sees: index 1 at distance 0 (B), index 0 at 1 (A), index 2 at 2 (A).
    Query 1 (class C) has nothing relevant."""
    db_codes = np.array([[0b0000_0001], [0b0000_0000], [0b0000_0011]], dtype=np.uint8)
    db_labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    q_codes = np.array([[0], [0]], dtype=np.uint8)
    q_labels = np.array([[1, 0, 0], [0, 0, 1]])
    return q_codes, q_labels, db_codes, db_labels


def test_map_by_hand():
    q_codes, q_labels, db_codes, db_labels = tiny_problem()
    # Query 0: relevant at ranks 2 and 3 -> AP = (1/2 + 2/3) / 2 = 7/12; query 1: AP 0.
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels) == pytest.approx(7 / 24)
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels,
                                  queries_without_hits="skip") == pytest.approx(7 / 12)
    # Top 2: only rank 2 is relevant -> AP@2 = 1/2.  Top 1: no hit for either query.
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk=2) == pytest.approx(1 / 4)
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk=1) == 0.0
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk=1,
                                  queries_without_hits="skip") == 0.0


def test_ties_are_broken_by_database_index():
    # Every item at distance 0: the order must be 0, 1, 2 -> relevant at ranks 2 and 3.
    db_codes = np.zeros((3, 1), np.uint8)
    db_labels = np.array([[0, 1], [1, 0], [1, 0]])
    q_codes, q_labels = np.zeros((1, 1), np.uint8), np.array([[1, 0]])
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels) == pytest.approx(7 / 12)
    # The same items listed the other way round: relevant at ranks 1 and 2 -> AP 1.
    assert mean_average_precision(q_codes, q_labels, db_codes, db_labels[::-1]) == pytest.approx(1.0)


def test_radius_metrics_by_hand():
    q_codes, q_labels, db_codes, db_labels = tiny_problem()
    # Radius 0: query 0 retrieves index 1 (B) -> 0; query 1 retrieves it too -> 0.
    assert precision_within_radius(q_codes, q_labels, db_codes, db_labels, radius=0) == (0.0, 0.0)
    # Radius 1: query 0 gets {0: A, 1: B} -> 1/2; query 1 gets nothing relevant -> 0.
    assert precision_within_radius(q_codes, q_labels, db_codes, db_labels, radius=1) == (0.25, 0.0)
    far = np.array([[0b1111_1111]], np.uint8)  # 6+ bits away from every database code
    result = precision_within_radius(far, q_labels[:1], db_codes, db_labels, radius=2)
    assert result.precision == 0.0 and result.empty_fraction == 1.0


def test_precision_at_n_by_hand():
    q_codes, q_labels, db_codes, db_labels = tiny_problem()
    got = precision_at_n(q_codes, q_labels, db_codes, db_labels, ns=(1, 2, 3, 100))
    # Query 0: B, A, A -> P@1 0, P@2 1/2, P@3 2/3; query 1 always 0; N=100 means the whole database.
    assert got == pytest.approx({1: 0.0, 2: 0.25, 3: 1 / 3, 100: 1 / 3})


# --------------------------------------------------- fast versus reference


@pytest.mark.parametrize("topk", [None, 1, 5, 20, 1000])
@pytest.mark.parametrize("skip", [False, True])
def test_map_matches_reference(problem, topk, skip, chunking):
    q_codes, q_labels, db_codes, db_labels = problem
    rankings = [ref_ranking(q, db_codes) for q in q_codes]
    expected = ref_map(rankings, q_labels, db_labels, topk, skip)
    policy = "skip" if skip else "zero"
    got = mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk, queries_without_hits=policy)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_one_pass_matches_single_metrics(problem):
    q_codes, q_labels, db_codes, db_labels = problem
    together = ranking_metrics(q_codes, q_labels, db_codes, db_labels, topks=(None, 7), ns=(1, 10))
    assert together.mean_average_precision == pytest.approx({
        None: mean_average_precision(q_codes, q_labels, db_codes, db_labels),
        7: mean_average_precision(q_codes, q_labels, db_codes, db_labels, 7),
    })
    assert together.precision_at_n == pytest.approx(precision_at_n(q_codes, q_labels, db_codes, db_labels, (1, 10)))


def test_precision_at_n_matches_reference(problem, chunking):
    q_codes, q_labels, db_codes, db_labels = problem
    rankings = [ref_ranking(q, db_codes) for q in q_codes]
    ns = (1, 3, 10, 41, 500)
    got = precision_at_n(q_codes, q_labels, db_codes, db_labels, ns)
    assert got == pytest.approx({n: ref_precision_at(rankings, q_labels, db_labels, n) for n in ns}, abs=1e-12)


@pytest.mark.parametrize("n_bytes", [1, 2])
def test_radius_precision_and_pr_curve_match_reference(n_bytes, chunking):
    q_codes, q_labels, db_codes, db_labels = random_problem(10 + n_bytes, n_bytes=n_bytes)
    curve = precision_recall_curve(q_codes, q_labels, db_codes, db_labels)
    bits = 8 * n_bytes
    np.testing.assert_array_equal(curve.radius, np.arange(bits + 1))
    for r in range(bits + 1):
        precision, recall, empty = ref_radius(q_codes, q_labels, db_codes, db_labels, r)
        assert curve.precision[r] == pytest.approx(precision, abs=1e-12)
        assert curve.recall[r] == pytest.approx(recall, abs=1e-12)
        assert curve.empty_fraction[r] == pytest.approx(empty)
        at_r = precision_within_radius(q_codes, q_labels, db_codes, db_labels, radius=r)
        assert at_r == pytest.approx((precision, empty), abs=1e-12)
    # Everything is within radius `bits`: recall reaches 1 and nothing is empty.
    assert curve.recall[-1] == pytest.approx(1.0)
    assert curve.empty_fraction[-1] == 0.0


# ------------------------------------------------------------- float ceiling


def test_float_map_matches_reference_with_ties(chunking):
    """+-1 features of length 16 make every cosine an exact multiple of 1/16, so ties are frequent and exact."""
    rng = np.random.default_rng(3)
    q_feats = rng.choice([-1.0, 1.0], (9, 16)).astype(np.float32)
    db_feats = rng.choice([-1.0, 1.0], (30, 16)).astype(np.float32)
    db_feats[::4] = db_feats[1]
    db_feats[::3] *= 3  # a scale changes nothing for cosine
    q_labels = (rng.random((9, 3)) < 0.4).astype(int)
    db_labels = (rng.random((30, 3)) < 0.4).astype(int)
    unit_q = np.sign(q_feats).astype(int)
    unit_db = np.sign(db_feats).astype(int)
    rankings = [sorted(range(30), key=lambda j: (-int(unit_q[i] @ unit_db[j]), j)) for i in range(9)]
    for topk in (None, 5):
        expected = ref_map(rankings, q_labels, db_labels, topk)
        got = mean_average_precision_float(q_feats, q_labels, db_feats, db_labels, topk)
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float_map_equals_hamming_map_for_sign_features(seed):
    """On +-1 vectors, cosine order is Hamming order, so both definitions must give the same number.
    16 bits keep the unit vectors (entries +-1/4) and their dot products exact in float32."""
    q_codes, q_labels, db_codes, db_labels = random_problem(seed, n_bytes=2)
    expected = mean_average_precision(q_codes, q_labels, db_codes, db_labels)
    got = mean_average_precision_float(signs_of(q_codes), q_labels, signs_of(db_codes), db_labels)
    assert got == pytest.approx(expected, abs=1e-12)


def test_bad_arguments_are_refused():
    q_codes, q_labels, db_codes, db_labels = tiny_problem()
    with pytest.raises(ValueError, match="topk"):
        mean_average_precision(q_codes, q_labels, db_codes, db_labels, topk=0)
    with pytest.raises(ValueError, match="queries_without_hits"):
        mean_average_precision(q_codes, q_labels, db_codes, db_labels, queries_without_hits="ignore")
    with pytest.raises(ValueError, match="multi-hot"):
        mean_average_precision(q_codes, q_labels[:1], db_codes, db_labels)
    with pytest.raises(ValueError, match="radius"):
        precision_within_radius(q_codes, q_labels, db_codes, db_labels, radius=-1)

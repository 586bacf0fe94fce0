"""The index against obviously-correct references: a brute-force scan and faiss IndexBinaryFlat.

The reference model is an insertion-ordered dict: an upsert of a known id keeps
its place, a new id goes to the end, a removed id that comes back is new.  The
index must return exactly its ids and distances, ties in that order.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from index import HammingIndex, codes


class Reference:
    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.items: dict[str, tuple[np.ndarray, dict]] = {}

    def upsert(self, ids: list[str], packed: np.ndarray, metas: list[dict]) -> None:
        for i, c, m in zip(ids, packed, metas):
            self.items[i] = (c, m)

    def remove(self, ids: list[str]) -> None:
        for i in ids:
            self.items.pop(i, None)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        ids = list(self.items)
        if not ids:
            return ids, np.zeros((0, self.bits // 8), dtype=np.uint8)
        return ids, np.stack([self.items[i][0] for i in ids])

    def search(self, queries: np.ndarray, k: int, max_distance: int | None = None):
        ids, db = self.matrix()
        bits_db = np.unpackbits(db, axis=1).astype(np.int32)
        out = []
        for q in np.unpackbits(queries, axis=1).astype(np.int32):
            dist = np.abs(bits_db - q).sum(axis=1) if len(ids) else np.zeros(0, dtype=np.int64)
            order = np.argsort(dist, kind="stable")
            if max_distance is not None:
                order = order[dist[order] <= max_distance]
            out.append([(ids[r], int(dist[r])) for r in order[:k]])
        return out


def random_codes(rng: np.random.Generator, n: int, bits: int, clustered: bool) -> np.ndarray:
    if not clustered:
        return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    # few centres, few flipped bits: many exact ties and duplicates
    centres = rng.integers(0, 2, size=(4, bits), dtype=np.uint8)
    picked = centres[rng.integers(0, 4, size=n)]
    flips = rng.random((n, bits)) < 2.0 / bits
    return np.packbits(picked ^ flips, axis=1)


def assert_same(index: HammingIndex, ref: Reference, queries: np.ndarray, k: int,
                max_distance: int | None = None) -> None:
    got = index.search(queries, k, max_distance)
    want = ref.search(queries, k, max_distance)
    for qi, expected in enumerate(want):
        assert [(h.id, h.distance) for h in got.hits(qi)] == expected
        assert all(i is None for i in got.ids[qi][len(expected):])
        assert (got.distances[qi][len(expected):] == -1).all()
        for hit in got.hits(qi):
            assert hit.metadata == ref.items[hit.id][1]


@pytest.mark.parametrize("bits", [8, 16, 32, 48, 64, 72, 96, 128, 256, 1024])
@pytest.mark.parametrize("clustered", [False, True])
def test_exact_against_brute_force_through_upserts_and_deletes(bits: int, clustered: bool) -> None:
    rng = np.random.default_rng(bits * 2 + clustered)
    index, ref = HammingIndex(bits, "test"), Reference(bits)
    n = 700
    ids = [f"item-{i}" for i in range(n)]
    packed = random_codes(rng, n, bits, clustered)
    metas = [{"n": i, "name": f"product {i}"} for i in range(n)]
    index.upsert(ids, packed, metas)
    ref.upsert(ids, packed, metas)
    queries = np.concatenate([random_codes(rng, 6, bits, clustered), packed[:3]])
    for k in (1, 7, 100, n + 5):
        assert_same(index, ref, queries, k)
    assert_same(index, ref, queries, 50, max_distance=bits // 4)

    # deletes, re-adds (new place in tie order) and in-place updates (same place)
    gone = [ids[i] for i in rng.choice(n, 300, replace=False)]
    assert index.remove(gone + ["never-added"]) == 300
    ref.remove(gone)
    again = gone[:40]
    changed = [ids[i] for i in range(0, n, 9) if ids[i] not in set(gone)]
    update_codes = random_codes(rng, len(again) + len(changed), bits, clustered)
    update_metas = [{"v": 2} for _ in update_codes]
    index.upsert(again + changed, update_codes, update_metas)
    ref.upsert(again + changed, update_codes, update_metas)
    assert len(index) == len(ref.items)
    for k in (1, 10, 1000):
        assert_same(index, ref, queries, k)


def assert_agrees_with_faiss(packed: np.ndarray, queries: np.ndarray, ks: tuple[int, ...], threads: int) -> None:
    """Ids are row numbers, so faiss's labels (ties by lower label) must equal ours exactly."""
    bits = packed.shape[1] * 8
    index = HammingIndex(bits, "test", threads=threads)
    index.upsert([str(i) for i in range(len(packed))], packed)
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(packed)
    for k in ks:
        want_d, want_i = flat.search(queries, k)
        got = index.search(queries, k)
        assert np.array_equal(got.distances, want_d)
        assert np.array_equal(got.ids.astype(np.int64), want_i)
    assert_range_agrees_with_faiss(index, flat, packed[:5], radius=bits // 16)  # stored codes: clusters around them


def assert_range_agrees_with_faiss(index: HammingIndex, flat: faiss.IndexBinaryFlat, queries: np.ndarray,
                                   radius: int) -> None:
    """faiss returns distances below its radius in its own order; ours are <= radius, by (distance, row)."""
    want_lims, want_d, want_i = flat.range_search(queries, radius + 1)
    got = index.range_search(queries, radius)
    assert np.array_equal(got.lims, want_lims) and want_lims[-1] > len(queries)
    for qi in range(len(queries)):
        lo, hi = want_lims[qi], want_lims[qi + 1]
        order = np.lexsort((want_i[lo:hi], want_d[lo:hi]))
        assert [(h.id, h.distance) for h in got.hits(qi)] == list(zip(want_i[lo:hi][order].astype(str).tolist(),
                                                                        want_d[lo:hi][order].tolist()))


@pytest.mark.parametrize("bits", [32, 64, 128, 256])
def test_matches_faiss_binary_flat(bits: int) -> None:
    rng = np.random.default_rng(bits)
    assert_agrees_with_faiss(random_codes(rng, 5000, bits, clustered=True),
                             random_codes(rng, 20, bits, clustered=True), (1, 10, 100), threads=1)


@pytest.mark.parametrize("bits", [64, 128, 192])
def test_two_thread_scan_agrees_with_faiss(bits: int) -> None:
    """Enough work (milliseconds) that the kernel's helper thread takes its share of rows before the caller
    gets to it, and the two lists are merged."""
    rng = np.random.default_rng(1)
    assert_agrees_with_faiss(random_codes(rng, 150_000, bits, clustered=True),
                             random_codes(rng, 50, bits, clustered=True), (100,), threads=2)


def filled(rng: np.random.Generator, bits: int, n: int, removed: slice) -> tuple[HammingIndex, Reference]:
    """An index and its reference holding the same n clustered codes, minus ids[removed]."""
    index, ref = HammingIndex(bits, "test"), Reference(bits)
    packed = random_codes(rng, n, bits, clustered=True)
    ids = [f"p{i}" for i in range(n)]
    index.upsert(ids, packed)
    ref.upsert(ids, packed, [{}] * n)
    index.remove(ids[removed])
    ref.remove(ids[removed])
    return index, ref


@pytest.mark.parametrize("bits", [16, 64, 128, 200])
def test_range_search_matches_reference(bits: int) -> None:
    rng = np.random.default_rng(bits)
    index, ref = filled(rng, bits, 2000, slice(None, None, 3))
    queries = random_codes(rng, 4, bits, clustered=True)
    for radius in (0, 3, bits // 4, bits, 10 * bits):  # beyond the code length: every live item
        result = index.range_search(queries, radius)
        want = ref.search(queries, 10**9, max_distance=radius)
        assert result.lims.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()
        for qi, expected in enumerate(want):
            assert [(h.id, h.distance) for h in result.hits(qi)] == expected
            assert all(h.metadata == {} for h in result.hits(qi))
    assert result.lims.flags.writeable and result.distances.flags.writeable  # as search()'s arrays are
    capped = index.range_search(queries, 3, max_results=2)
    for qi, expected in enumerate(ref.search(queries, 2, max_distance=3)):
        assert [(h.id, h.distance) for h in capped.hits(qi)] == expected


def test_two_thread_range_search_skips_deleted_rows() -> None:
    rng = np.random.default_rng(2)
    packed = random_codes(rng, 140_000, 64, clustered=True)
    index = HammingIndex(64, "test", threads=2)
    index.upsert([str(i) for i in range(len(packed))], packed)
    index.remove([str(i) for i in range(0, len(packed), 7)])
    result = index.range_search(packed[:40], 4)  # enough work that both threads take rows
    for qi in range(40):
        dist = np.bitwise_count(packed ^ packed[qi]).sum(axis=1)
        rows = [r for r in np.flatnonzero(dist <= 4) if r % 7]
        rows.sort(key=lambda r: (dist[r], r))
        assert [(h.id, h.distance) for h in result.hits(qi)] == [(str(r), int(dist[r])) for r in rows]


def test_range_search_on_an_empty_index_and_no_queries() -> None:
    index = HammingIndex(64, "test")
    empty = index.range_search(np.zeros((2, 8), dtype=np.uint8), 64)
    assert empty.lims.tolist() == [0, 0, 0] and empty.ids == [] and len(empty.distances) == 0
    index.upsert(["a"], np.zeros((1, 8), dtype=np.uint8))
    none = index.range_search(np.zeros((0, 8), dtype=np.uint8), 2)
    assert none.lims.tolist() == [0] and none.ids == []


def test_compaction_keeps_results_and_order() -> None:
    rng = np.random.default_rng(4)
    bits = 32
    index, ref = filled(rng, bits, 6000, slice(1, None, 2))
    stats = index.stats()
    assert stats["rows"] == 3000 and stats["deleted_rows"] == 0  # compacted
    queries = random_codes(rng, 5, bits, clustered=True)
    assert_same(index, ref, queries, 200)
    # still writable after compaction, and the id table still finds everyone
    code = random_codes(rng, 1, bits, clustered=True)
    index.upsert(["p1"], code, [{"back": True}])
    ref.upsert(["p1"], code, [{"back": True}])
    assert index.get("p1").metadata == {"back": True}
    assert all(f"p{i}" in index for i in range(0, 6000, 2))
    assert_same(index, ref, queries, 200)


def test_items_round_trip_and_unicode_ids() -> None:
    index = HammingIndex(16, "test")
    ids = ["SKU-1", "ÄÖÜ-ß", "商品-42", "emoji-🙂", "with space", "../../etc/passwd"]
    packed = np.arange(len(ids) * 2, dtype=np.uint8).reshape(len(ids), 2)
    metas = [{"name": i, "price": 1.5, "tags": ["a", "b"]} for i in ids]
    index.add(ids, packed, metas)
    for i, c, m in zip(ids, packed, metas):
        item = index.get(i)
        assert item.code == c.tobytes() and item.metadata == m
    assert len(index) == len(ids) and "商品-42" in index and "nope" not in index and 5 not in index


def test_reset_and_empty_index() -> None:
    index = HammingIndex(64, "test")
    empty = index.search(np.zeros((2, 8), dtype=np.uint8), 3)
    assert empty.ids.tolist() == [[None] * 3] * 2 and (empty.distances == -1).all()
    index.upsert(["a", "b"], np.zeros((2, 8), dtype=np.uint8))
    index.reset()
    assert len(index) == 0 and "a" not in index
    index.upsert(["a"], np.ones((1, 64), dtype=np.int8))
    assert index.search(np.full((1, 8), 255, dtype=np.uint8), 1).hits(0)[0].distance == 0


@pytest.mark.parametrize("call, error, message", [
    (lambda ix: ix.upsert(["a"], np.zeros((1, 4), dtype=np.uint8)), ValueError, r"uint8 \[n, 8\]"),
    (lambda ix: ix.upsert(["a", "b"], np.zeros((1, 8), dtype=np.uint8)), ValueError, "2 ids but 1 codes"),
    (lambda ix: ix.upsert(["a", "a"], np.zeros((2, 8), dtype=np.uint8)), ValueError, "duplicate ids"),
    (lambda ix: ix.upsert([""], np.zeros((1, 8), dtype=np.uint8)), ValueError, "non-empty strings"),
    (lambda ix: ix.upsert([7], np.zeros((1, 8), dtype=np.uint8)), ValueError, "non-empty strings"),
    (lambda ix: ix.upsert(["x" * 600], np.zeros((1, 8), dtype=np.uint8)), ValueError, "limit is 512"),
    (lambda ix: ix.upsert(["\ud800"], np.zeros((1, 8), dtype=np.uint8)), ValueError, "not valid Unicode"),
    (lambda ix: ix.upsert(["a"], np.zeros((1, 8), dtype=np.uint8), [[1, 2]]), ValueError, "JSON object"),
    (lambda ix: ix.upsert(["a"], np.zeros((1, 8), dtype=np.uint8), [{"x": object()}]), ValueError,
     "not JSON-serialisable"),
    (lambda ix: ix.upsert(["a"], np.zeros((1, 8), dtype=np.uint8), [{"x": float("nan")}]), ValueError,
     "not JSON-serialisable"),
    (lambda ix: ix.upsert(["a"], np.zeros((1, 8), dtype=np.uint8), [{"x": "y" * 70000}]), ValueError,
     "limit is 65536"),
    (lambda ix: ix.add(["existing"], np.zeros((1, 8), dtype=np.uint8)), KeyError, "already in the index"),
    (lambda ix: ix.get("missing"), KeyError, "missing"),
    (lambda ix: ix.search(np.zeros((1, 8), dtype=np.uint8), 0), ValueError, "positive integer"),
    (lambda ix: ix.search(np.zeros((1, 8), dtype=np.uint8), 10**6), ValueError, "at most 10000"),
    (lambda ix: ix.search(np.zeros((1, 8), dtype=np.uint8), 2.5), ValueError, "positive integer"),
    (lambda ix: ix.search(np.zeros((1, 8), dtype=np.uint8), 1, max_distance=-1), ValueError, "non-negative"),
    (lambda ix: ix.search(np.zeros((1, 16), dtype=np.uint8), 1), ValueError, r"uint8 \[n, 8\]"),
    (lambda ix: ix.range_search(np.zeros((1, 8), dtype=np.uint8), -2), ValueError, "non-negative"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(call, error, message) -> None:
    index = HammingIndex(64, "test")
    index.upsert(["existing"], np.zeros((1, 8), dtype=np.uint8), [{"keep": 1}])
    seq = index.stats()["seq"]
    with pytest.raises(error, match=message):
        call(index)
    assert len(index) == 1 and index.get("existing").metadata == {"keep": 1}
    assert index.stats()["seq"] == seq


def test_concurrent_searches_and_writers() -> None:
    """Searches run while two writers upsert and delete; nothing raises and the end state is exact."""
    rng = np.random.default_rng(5)
    bits = 64
    index, ref = HammingIndex(bits, "test"), Reference(bits)
    base = random_codes(rng, 3000, bits, clustered=False)
    ids = [f"b{i}" for i in range(3000)]
    index.upsert(ids, base)
    ref.upsert(ids, base, [{}] * 3000)
    errors: list[BaseException] = []
    stop = threading.Event()
    writer_codes = {w: random_codes(np.random.default_rng(w), 1000, bits, clustered=False) for w in (0, 1)}

    def search_loop() -> None:
        try:
            while not stop.is_set():
                result = index.search(base[:4], 20)
                assert all(len(result.hits(q)) == 20 for q in range(4))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    def write_loop(w: int) -> None:
        try:
            for j in range(0, 1000, 50):
                chunk = [f"w{w}-{i}" for i in range(j, j + 50)]
                index.upsert(chunk, writer_codes[w][j: j + 50])
                index.remove(chunk[:10])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=search_loop) for _ in range(2)]
    writers = [threading.Thread(target=write_loop, args=(w,)) for w in (0, 1)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    for w in (0, 1):
        for j in range(0, 1000, 50):
            chunk = [f"w{w}-{i}" for i in range(j, j + 50)]
            ref.upsert(chunk, writer_codes[w][j: j + 50], [{}] * 50)
            ref.remove(chunk[:10])
    assert len(index) == len(ref.items) == 3000 + 2 * 800
    # writers interleave, so tie order among their items may differ from this serial replay;
    # compare distances exactly and the id sets by distance
    got = index.search(base[:8], 300)
    want = ref.search(base[:8], 300)
    for qi, expected in enumerate(want):
        hits = got.hits(qi)
        assert [h.distance for h in hits] == [d for _, d in expected]
        assert {h.id for h in hits if h.distance < expected[-1][1]} == \
            {i for i, d in expected if d < expected[-1][1]}


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


# The kernel path each HAMMING_KERNEL cap selects, and the CPU flags it needs.
KERNEL_PATHS = {"scalar": set(), "avx2": {"avx2", "popcnt"}, "avx512": {"avx512f", "avx512_vpopcntdq"}}


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_every_kernel_path_agrees_with_faiss(path: str) -> None:
    """Each path the CPU has, forced in a subprocess; lengths around 64 and 128 bits cover the SIMD scans and their tails."""
    if not KERNEL_PATHS[path] <= _cpu_flags():
        pytest.skip(f"this CPU lacks {', '.join(sorted(KERNEL_PATHS[path] - _cpu_flags()))} for the {path} kernel")
    script = textwrap.dedent(f"""
        import faiss, numpy as np
        from index import HammingIndex, kernels
        from tests.index.test_hamming import assert_range_agrees_with_faiss
        assert kernels.SIMD == {path!r}, kernels.SIMD
        rng = np.random.default_rng(0)
        for bits in (16, 64, 128, 200):
            centres = rng.integers(0, 256, size=(3, bits // 8), dtype=np.uint8)
            packed = centres[rng.integers(0, 3, 3007)] ^ (rng.random((3007, bits // 8)) < 0.05).astype(np.uint8)
            index = HammingIndex(bits, "t")
            index.upsert([str(i) for i in range(3007)], packed)
            flat = faiss.IndexBinaryFlat(bits)
            flat.add(packed)
            for k in (1, 50):
                d, i = flat.search(packed[:7], k)
                got = index.search(packed[:7], k)
                assert np.array_equal(got.distances, d) and np.array_equal(got.ids.astype(np.int64), i), (bits, k)
            assert_range_agrees_with_faiss(index, flat, packed[:7], radius=bits // 10)
        print("ok")
    """)
    env = {**os.environ, "HAMMING_KERNEL": path}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_misspelt_kernel_cap_fails_the_import() -> None:
    env = {**os.environ, "HAMMING_KERNEL": "AVX2"}
    out = subprocess.run([sys.executable, "-c", "import index"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "HAMMING_KERNEL=AVX2: expected scalar, avx2 or avx512" in out.stderr, out.stderr

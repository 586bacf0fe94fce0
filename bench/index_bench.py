"""Exact Hamming search: this index against faiss IndexBinaryFlat, numpy, and the memory floor.

Measures throughput (queries per second) for single queries and batches of
100 at several database sizes, code lengths and k, on the same random codes
in the same process, top-k and radius queries; then the memory and reopen time of an index of string
ids.  It measures; it asserts nothing about speed.

    python -m bench.index_bench                  # 1M and 10M, 64 and 128 bits (minutes)
    python -m bench.index_bench --quick          # 100k, a smoke run (seconds)
    python -m bench.index_bench --memory 10000000  # also the 10M-ids memory/reopen figures

Results go to stdout as Markdown and to bench/results/index_bench.{md,json}.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.measure import rss_bytes
from bench.report import cpu_model
from index import HammingIndex, kernels
from index.stores.local import LocalStore

if TYPE_CHECKING:
    import faiss  # imported where it is used: the benchmarks need it, the index does not

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn: Callable[[], object], queries_per_call: int, min_seconds: float = 1.0, min_calls: int = 5) -> float:
    """Queries per second of fn, timed after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return calls * queries_per_call / (time.perf_counter() - start)


def numpy_search(db: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The naive baseline: XOR, bitwise_count, argpartition over the whole matrix."""
    dist = np.bitwise_count(db ^ query).sum(axis=1, dtype=np.int32)
    top = np.argpartition(dist, k)[:k]
    return top[np.lexsort((top, dist[top]))]


def memory_floor_qps(db: np.ndarray) -> float:
    """Reading every code once per query and nothing else: an upper bound for a one-thread scan."""
    flat = db.reshape(-1)
    seconds = 1.0 / rate(lambda: np.bitwise_or.reduce(flat), 1)
    return 1.0 / seconds


def machine() -> str:
    return f"{cpu_model()}, {kernels.default_threads()} cores, {platform.python_implementation()} {platform.python_version()}"


def as_words(packed: np.ndarray) -> np.ndarray:
    return packed.view("<u8").astype(np.uint64, copy=False)


def random_database(rng: np.random.Generator, n: int, bits: int) -> tuple[np.ndarray, np.ndarray, faiss.IndexBinaryFlat]:
    """n random codes as packed bytes, as the kernel's uint64 words, and in a faiss IndexBinaryFlat."""
    import faiss

    packed = rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(packed)
    return packed, as_words(packed), flat


def bench_scan(n: int, bits: int, ks: list[int], threads: list[int], with_numpy: bool) -> list[dict]:
    import faiss

    rng = np.random.default_rng(n + bits)
    packed, words, flat = random_database(rng, n, bits)
    queries = rng.integers(0, 256, size=(100, bits // 8), dtype=np.uint8)
    qwords = as_words(queries)
    floor = memory_floor_qps(words)
    rows = []
    for k in ks:
        row: dict = {"n": n, "bits": bits, "k": k, "memory_floor_qps": floor}
        faiss.omp_set_num_threads(1)
        row["faiss_1t_single"] = rate(lambda: flat.search(queries[:1], k), 1)
        row["faiss_1t_batch"] = rate(lambda: flat.search(queries, k), 100)
        faiss.omp_set_num_threads(max(threads))
        row[f"faiss_{max(threads)}t_batch"] = rate(lambda: flat.search(queries, k), 100)
        for t in threads:
            row[f"ours_{t}t_single"] = rate(lambda: kernels.knn(words, n, qwords[:1], k, bits + 1, None, t), 1)
            row[f"ours_{t}t_batch"] = rate(lambda: kernels.knn(words, n, qwords, k, bits + 1, None, t), 100)
        if with_numpy:
            row["numpy_single"] = rate(lambda: numpy_search(words, qwords[0], k), 1, min_seconds=0.5, min_calls=2)
        rows.append(row)
        print(format_row(row, threads), flush=True)
    return rows


def bench_range(n: int, bits: int, radius: int, threads: list[int]) -> dict:
    """Radius queries (everything within `radius`), against faiss's range_search on the same codes.

    The queries are stored codes with a bit flipped, so each has neighbours to collect, as a
    near-duplicate lookup does; faiss counts distances below its radius, hence radius + 1 there.
    """
    import faiss

    rng = np.random.default_rng(n + bits + radius)
    packed, words, flat = random_database(rng, n, bits)
    queries = packed[rng.choice(n, 100, replace=False)].copy()
    queries[:, 0] ^= 1
    qwords = as_words(queries)
    row: dict = {"n": n, "bits": bits, "radius": radius,
                 "hits_per_query": int(kernels.within(words, n, qwords, radius)[0][-1]) / len(queries)}
    faiss.omp_set_num_threads(1)
    row["faiss_1t_single"] = rate(lambda: flat.range_search(queries[:1], radius + 1), 1)
    row["faiss_1t_batch"] = rate(lambda: flat.range_search(queries, radius + 1), 100)
    faiss.omp_set_num_threads(max(threads))
    row[f"faiss_{max(threads)}t_batch"] = rate(lambda: flat.range_search(queries, radius + 1), 100)
    for t in threads:
        row[f"ours_{t}t_single"] = rate(lambda: kernels.within(words, n, qwords[:1], radius, threads=t), 1)
        row[f"ours_{t}t_batch"] = rate(lambda: kernels.within(words, n, qwords, radius, threads=t), 100)
    print(format_range_row(row, threads), flush=True)
    return row


def bench_api(n: int, bits: int, k: int, radius: int, threads: int) -> dict:
    """HammingIndex.search and range_search (ids and metadata included), to show the Python layer's cost."""
    rng = np.random.default_rng(7)
    index = HammingIndex(bits, "bench", threads=threads)
    chunk = 200_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        index.upsert([f"sku-{i:09d}" for i in range(start, stop)],
                     rng.integers(0, 256, size=(stop - start, bits // 8), dtype=np.uint8))
    queries = rng.integers(0, 256, size=(100, bits // 8), dtype=np.uint8)
    return {"n": n, "bits": bits, "k": k, "radius": radius, "threads": threads,
            "api_single_qps": rate(lambda: index.search(queries[:1], k), 1),
            "api_batch_qps": rate(lambda: index.search(queries, k), 100),
            "api_range_single_qps": rate(lambda: index.range_search(queries[:1], radius), 1),
            "api_range_batch_qps": rate(lambda: index.range_search(queries, radius), 100)}


def bench_memory(n: int, bits: int, workdir: Path) -> dict:
    """Memory and reopen time of n items with 13-byte string ids, through the local store."""
    rng = np.random.default_rng(11)
    path = workdir / "memory-index"
    shutil.rmtree(path, ignore_errors=True)
    index = HammingIndex(bits, "bench", store=LocalStore(path, fsync=False, snapshot_after_bytes=1 << 40))
    start = time.perf_counter()
    chunk = 500_000
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        index.upsert([f"sku-{i:09d}" for i in range(lo, hi)],
                     rng.integers(0, 256, size=(hi - lo, bits // 8), dtype=np.uint8))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    index.checkpoint()
    snapshot_s = time.perf_counter() - start
    index.close()
    del index
    gc.collect()
    disk = sum(f.stat().st_size for f in path.iterdir())
    before = rss_bytes()
    start = time.perf_counter()
    reopened = HammingIndex(bits, "bench", store=LocalStore(path, fsync=False))
    reopen_s = time.perf_counter() - start
    grown = rss_bytes() - before
    stats = reopened.stats()
    probe = rng.integers(0, 256, size=(1, bits // 8), dtype=np.uint8)
    assert reopened.search(probe, 1).ids[0, 0] is not None and f"sku-{n - 1:09d}" in reopened
    reopened.close()
    shutil.rmtree(path, ignore_errors=True)
    codes_bytes = n * ((bits + 63) // 64) * 8
    return {"n": n, "bits": bits, "build_s": build_s, "snapshot_s": snapshot_s, "reopen_s": reopen_s,
            "disk_bytes": disk, "rss_growth_bytes": grown, "index_memory_bytes": stats["memory_bytes"],
            "codes_bytes": codes_bytes, "bytes_per_item_beyond_codes": (stats["memory_bytes"] - codes_bytes) / n}


def format_row(row: dict, threads: list[int]) -> str:
    t = max(threads)
    cells = [f"{row['n']:,}", str(row["bits"]), str(row["k"]),
             f"{row['faiss_1t_single']:,.0f}", f"{row['ours_1t_single']:,.0f}",
             f"{row[f'ours_{t}t_single']:,.0f}", f"{row['ours_1t_single'] / row['faiss_1t_single']:.2f}x",
             f"{row['faiss_1t_batch']:,.0f}", f"{row[f'faiss_{t}t_batch']:,.0f}", f"{row['ours_1t_batch']:,.0f}",
             f"{row[f'ours_{t}t_batch']:,.0f}", f"{row['ours_1t_batch'] / row['faiss_1t_batch']:.2f}x",
             f"{row['numpy_single']:,.1f}" if "numpy_single" in row else "-", f"{row['memory_floor_qps']:,.0f}"]
    return "| " + " | ".join(cells) + " |"


def format_range_row(row: dict, threads: list[int]) -> str:
    t = max(threads)
    cells = [f"{row['n']:,}", str(row["bits"]), str(row["radius"]), f"{row['hits_per_query']:.1f}",
             f"{row['faiss_1t_single']:,.0f}", f"{row['ours_1t_single']:,.0f}", f"{row[f'ours_{t}t_single']:,.0f}",
             f"{row['faiss_1t_batch']:,.0f}", f"{row[f'faiss_{t}t_batch']:,.0f}", f"{row['ours_1t_batch']:,.0f}",
             f"{row[f'ours_{t}t_batch']:,.0f}", f"{row['ours_1t_batch'] / row['faiss_1t_batch']:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def range_table(rows: list[dict], threads: list[int]) -> str:
    t = max(threads)
    head = ["n", "bits", "radius", "hits a query", "faiss 1t single", "ours 1t single", f"ours {t}t single",
            "faiss 1t batch", f"faiss {t}t batch", "ours 1t batch", f"ours {t}t batch", "batch 1t vs faiss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + [format_range_row(r, threads) for r in rows])


def table(rows: list[dict], threads: list[int]) -> str:
    t = max(threads)
    head = ["n", "bits", "k", "faiss 1t single", "ours 1t single", f"ours {t}t single", "single 1t vs faiss",
            "faiss 1t batch", f"faiss {t}t batch", "ours 1t batch", f"ours {t}t batch", "batch 1t vs faiss",
            "numpy single", "memory floor 1t"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + [format_row(r, threads) for r in rows])


PARTS = ("topk", "radius", "api")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k codes only: a smoke run")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to measure (everything by default); a partial run writes index_bench-PARTS.*")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--radius", type=int, default=2, help="radius of the range-search rows")
    parser.add_argument("--memory", type=int, default=0, help="also measure an index of this many string ids")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [100_000] if args.quick else args.sizes
    threads = sorted({1, kernels.default_threads()})
    print(f"Machine: {machine()}; kernel: {kernels.SIMD}", flush=True)
    rows, radius_rows, api, tables = [], [], [], []
    if "topk" in args.parts:
        print(f"\n# Hamming scan, queries per second\n\n{table([], threads)}", flush=True)
        for n in sizes:
            for bits in args.bits:
                rows += bench_scan(n, bits, args.k, threads, with_numpy=True)
        tables.append(table(rows, threads))
    if "radius" in args.parts:
        print(f"\n# Radius queries (radius {args.radius}), queries per second\n\n{range_table([], threads)}", flush=True)
        radius_rows = [bench_range(n, bits, args.radius, threads) for n in sizes for bits in args.bits]
        tables.append(f"Radius queries (radius {args.radius}):\n\n{range_table(radius_rows, threads)}")
    if "api" in args.parts:
        api = [bench_api(min(sizes), bits, 10, args.radius, max(threads)) for bits in args.bits]
        print("\nThrough HammingIndex (ids and metadata decoded), queries per second:")
        for a in api:
            print(f"  n={a['n']:,} bits={a['bits']}: search k=10 single {a['api_single_qps']:,.0f}, batch of 100 "
                  f"{a['api_batch_qps']:,.0f}; range_search radius {a['radius']} single {a['api_range_single_qps']:,.0f}, "
                  f"batch of 100 {a['api_range_batch_qps']:,.0f}")
    memory = []
    if args.memory:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            memory.append(bench_memory(args.memory, 64, Path(tmp)))
        m = memory[0]
        print(f"\nMemory, {m['n']:,} items of {m['bits']} bits with 13-byte ids: index {m['index_memory_bytes'] / 2**20:,.0f} MiB "
              f"(codes {m['codes_bytes'] / 2**20:,.0f} MiB, {m['bytes_per_item_beyond_codes']:.1f} B/item beyond them), "
              f"RSS growth on reopen {m['rss_growth_bytes'] / 2**20:,.0f} MiB, reopen {m['reopen_s']:.1f} s, "
              f"snapshot write {m['snapshot_s']:.1f} s, on disk {m['disk_bytes'] / 2**20:,.0f} MiB")
    if not args.quick:
        name = "index_bench" if set(args.parts) == set(PARTS) else "-".join(["index_bench", *args.parts])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(
            {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "kernel": kernels.SIMD, "scan": rows,
             "range": radius_rows, "api": api, "memory": memory}, indent=1))
        (args.out / f"{name}.md").write_text(
            f"Machine: {machine()}; kernel: {kernels.SIMD}; {time.strftime('%Y-%m-%d')}\n\n" + "\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()

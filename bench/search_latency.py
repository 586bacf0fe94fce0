"""/search latency and throughput of a real server: 1, 8 and 32 concurrent clients, 100k and 1M items.

The index is synthetic (random 64-bit codes under realistic ids and
metadata, written straight into a LocalStore directory with the default
checkpoint's fingerprint), the queries are real grocery test images, so the
encoder does the real work.  Each level runs for a fixed time after a
warm-up; the clients (async httpx, one connection each, loopback) send
pre-built multipart bodies.  Beside the client's latency it reports the
server's own stage timings from each response (decode, encode, search) and,
from /metrics, how many images each encoder call held.  It measures; it
asserts nothing about speed.

    python -m bench.search_latency            # 100k and 1M items (about 10 minutes)
    python -m bench.search_latency --quick    # 10k items, short levels: a smoke run; writes no results

Results go to stdout and to the "search" section of bench/results/service_bench.{md,json}.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.measure import percentiles
from bench.report import markdown_table as table
from bench.service_harness import (
    LOAD_HEAD,
    RESULTS,
    add_server_env,
    grocery_items,
    multipart,
    quiet,
    running_server,
    save_section,
)
from index import HammingIndex
from index.stores.local import LocalStore
from model.checkpoint import read_metadata
from service.catalogue import CatalogueItem
from service.settings import DEFAULT_CHECKPOINT

SIZES = [100_000, 1_000_000]
CLIENTS = [1, 8, 32]
K = 10


def build_index(path: Path, n: int, catalogue: list[CatalogueItem]) -> float:
    """n random codes with ids and metadata like a shop's, under the default checkpoint's fingerprint; seconds."""
    checkpoint = read_metadata(DEFAULT_CHECKPOINT)
    rng = np.random.default_rng(n)
    started = time.perf_counter()
    index = HammingIndex(checkpoint["bits"], checkpoint["fingerprint"],
                         store=LocalStore(path, fsync=False, snapshot_after_bytes=1 << 40))
    chunk = 100_000
    for lo in range(0, n, chunk):
        ids = [f"sku-{i:08d}" for i in range(lo, min(n, lo + chunk))]
        metadata = [{**catalogue[i % len(catalogue)].metadata, "price": round(0.25 + i % 700 / 100, 2),
                     "image": f"https://shop.example/images/{item_id}.jpg"} for i, item_id in enumerate(ids, lo)]
        index.upsert(ids, rng.integers(0, 256, size=(len(ids), checkpoint["bits"] // 8), dtype=np.uint8), metadata)
    index.checkpoint()
    index.close()
    return time.perf_counter() - started


def batch_counts(client: httpx.Client) -> tuple[float, float]:
    """(encoder calls, images encoded) so far, from the server's /metrics."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "deephash_encode_batch_size":
            values = {s.name: s.value for s in family.samples}
            return values["deephash_encode_batch_size_count"], values["deephash_encode_batch_size_sum"]
    raise RuntimeError("the server's /metrics has no deephash_encode_batch_size")


async def load_level(url: str, bodies: list[tuple[bytes, dict[str, str]]], clients: int, seconds: float,
                     warmup_s: float) -> dict:
    """`clients` clients, each sending one /search after the other: warm-up, then `seconds` measured."""
    latencies: list[float] = []
    stages: list[dict[str, float]] = []
    statuses: Counter[int] = Counter()
    answered = 0  # warm-up included, to share out the CPU time measured around the whole level
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one_client(first: int, until: float, record: bool) -> None:
            nonlocal answered
            n = first
            while loop.time() < until:
                body, headers = bodies[n % len(bodies)]
                n += clients
                sent = time.perf_counter()
                response = await client.post(f"/search?k={K}", content=body, headers=headers)
                latency = time.perf_counter() - sent
                answered += 1
                if not record:
                    continue
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    latencies.append(latency)
                    stages.append(response.json()["timings"])

        warm_until = loop.time() + warmup_s
        await asyncio.gather(*(one_client(c, warm_until, False) for c in range(clients)))
        started = loop.time()
        await asyncio.gather(*(one_client(c, started + seconds, True) for c in range(clients)))
        elapsed = loop.time() - started
    server = {name: percentiles([s[f"{name}_ms"] for s in stages], (50,))["p50"]
              for name in ("decode", "encode", "search", "total")} if stages else {}
    overhead = [1e3 * lat - s["total_ms"] for lat, s in zip(latencies, stages)]
    return {"clients": clients, "seconds": elapsed, "ok": len(latencies), "statuses": dict(statuses),
            "answered_with_warmup": answered,
            "requests_per_s": len(latencies) / elapsed,
            "latency_ms": {p: 1e3 * v for p, v in percentiles(latencies).items()},
            "server_p50_ms": server, "outside_p50_ms": percentiles(overhead, (50,)).get("p50")}


def run_level(server_url: str, control: httpx.Client, bodies: list, clients: int, seconds: float,
              warmup_s: float) -> dict:
    calls0, images0 = batch_counts(control)
    row = asyncio.run(load_level(server_url, bodies, clients, seconds, warmup_s))
    calls1, images1 = batch_counts(control)
    # Warm-up batches are counted too: the same load, so the same mean.
    row["mean_batch"] = (images1 - images0) / max(1.0, calls1 - calls0)
    return row


def bench_size(n: int, workdir: Path, bodies: list, catalogue: list[CatalogueItem], clients: list[int],
               seconds: float, warmup_s: float, env: dict[str, str]) -> list[dict]:
    path = workdir / f"index-{n}"
    build_s = build_index(path, n, catalogue)
    print(f"\n{n:,} items (built in {build_s:.1f} s)\n\n{table(LATENCY_HEAD, [])}", flush=True)
    rows = []
    with running_server(workdir, {"DEEPHASH_INDEX_PATH": str(path), **env}) as server:
        for c in clients:
            row, load = quiet(partial(run_level, server.url, server.client, bodies, c, seconds, warmup_s),
                              pids=(server.process.pid,))
            client_s, server_s = load.cpu_seconds()
            rows.append({"items": n, **row, "load": load, "server_cpu_ms": 1e3 * server_s / row["answered_with_warmup"],
                         "client_cpu_ms": 1e3 * client_s / row["answered_with_warmup"]})
            print(f"{table(LATENCY_HEAD, [latency_cells(rows[-1])]).splitlines()[-1]}\n  where the time goes: "
                  f"{table(TIME_HEAD, [time_cells(rows[-1])]).splitlines()[-1]}", flush=True)
    return rows


LATENCY_HEAD = ["items", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", *LOAD_HEAD]
TIME_HEAD = ["items", "clients", "decode", "encode", "search", "outside the handler", "images per encoder call",
             "server CPU", "client CPU"]


def latency_cells(row: dict) -> list[str]:
    lat = row["latency_ms"]
    errors = sum(count for status, count in row["statuses"].items() if status != 200)
    return [f"{row['items']:,}", str(row["clients"]), f"{row['requests_per_s']:.1f}",
            *(f"{lat[p]:.0f}" for p in ("p50", "p95", "p99")), str(errors), *row["load"].cells()]


def time_cells(row: dict) -> list[str]:
    server = row["server_p50_ms"]
    return [f"{row['items']:,}", str(row["clients"]), *(f"{server[s]:.1f}" for s in ("decode", "encode", "search")),
            f"{row['outside_p50_ms']:.1f}", f"{row['mean_batch']:.1f}", f"{row['server_cpu_ms']:.0f}",
            f"{row['client_cpu_ms']:.1f}"]


def markdown(rows: list[dict], query_note: str, seconds: float) -> str:
    return (f"`/search?k={K}` with {query_note}, each level {seconds:.0f} s after a warm-up; default settings "
            "(batch size 16, batch wait 5 ms, 2 decode threads). Latencies at the client; *errors*: responses "
            f"other than 200.\n\n{table(LATENCY_HEAD, [latency_cells(r) for r in rows])}\n\n"
            "Where the time goes, in ms per request: *decode*, *encode*, *search*: medians of the stage timings "
            "the response reports (decode: waiting for and running the decode pool; encode: waiting for and "
            "running the batched encoder; search: the index scan with ids and metadata); *outside the "
            "handler*: median of client latency minus the handler's total (HTTP, multipart parsing, JSON, the "
            "event loop's queue); *images per encoder call*: from the server's /metrics; *server CPU*, *client "
            "CPU*: CPU time of the server process and of the clients per request.\n\n"
            f"{table(TIME_HEAD, [time_cells(r) for r in rows])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k items, 2 s levels: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--clients", type=int, nargs="+", default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured time before each level")
    parser.add_argument("--queries", type=int, default=64, help="distinct query images")
    add_server_env(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    sizes, seconds, warmup = ([10_000], 2.0, 0.5) if args.quick else (args.sizes, args.seconds, args.warmup)
    queries = grocery_items(args.queries)
    bodies = [multipart([("image", (Path(q.id).name, q.source.read_bytes(), "image/jpeg"))]) for q in queries]
    catalogue = grocery_items(500, split="train")
    query_note = f"{len(queries)} grocery test JPEGs in turn"
    print(f"# /search, {query_note}, k={K}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for n in sizes:
            rows += bench_size(n, Path(tmp), bodies, catalogue, args.clients, seconds, warmup, dict(args.server_env))
    if not args.quick:
        save_section("search", " ".join(["python -m bench.search_latency", *argv]),
                     markdown(rows, query_note, seconds), rows, args.out)


if __name__ == "__main__":
    main()

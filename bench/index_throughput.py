"""POST /index throughput of a real server, in images per second: synchronous requests and a background job.

One client sends grocery test images (with their ids and metadata) one
request after the other, in requests of each batch size; the server answers
them synchronously (DEEPHASH_ASYNC_INDEX_THRESHOLD is raised to the largest
batch size).  Then one request with more images than that threshold becomes
a background job, timed from the POST to the job's success.  Every image goes
through the service's whole path: multipart upload, decode, encode, upsert
into a LocalStore index with fsync.  It measures; it asserts nothing about
speed.

    python -m bench.index_throughput            # batches of 16 and 64, a job of 256 images (about a minute)
    python -m bench.index_throughput --quick    # batches of 4, a job of 8: a smoke run; writes no results

Results go to stdout and to the "index" section of bench/results/service_bench.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import httpx

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
from service.catalogue import CatalogueItem
from tests.service.servers import poll_job

BATCH_SIZES = [16, 64]


def index_body(items: list[CatalogueItem], prefix: str) -> tuple[bytes, dict[str, str]]:
    """A POST /index body: the images, and their ids (under `prefix`) with metadata."""
    entries = [{"id": f"{prefix}/{item.id}", "metadata": item.metadata} for item in items]
    files = [("images", (Path(item.id).name, item.source.read_bytes(), "image/jpeg")) for item in items]
    return multipart(files, {"items": json.dumps(entries)})


def new_run() -> str:
    """An id prefix of its own for each run, so that every run adds new items rather than replacing."""
    return f"bench-{uuid.uuid4().hex[:8]}"


def sync_run(client: httpx.Client, items: list[CatalogueItem], batch: int) -> dict:
    """All `items` in synchronous requests of `batch` images, one after the other."""
    run = new_run()
    bodies = [index_body(items[lo: lo + batch], f"{run}/{lo}") for lo in range(0, len(items), batch)]
    started = time.perf_counter()
    for body, headers in bodies:
        response = client.post("/index", content=body, headers=headers)
        response.raise_for_status()
        if response.json()["rejected"]:
            raise RuntimeError(f"images rejected: {response.json()}")
    seconds = time.perf_counter() - started
    return {"mode": f"sync, {batch} per request", "images": len(items), "requests": len(bodies),
            "seconds": seconds, "images_per_s": len(items) / seconds, "ms_per_request": 1e3 * seconds / len(bodies)}


def job_run(client: httpx.Client, items: list[CatalogueItem]) -> dict:
    """All `items` in one request, which the server takes as a background job; timed until the job succeeds."""
    body, headers = index_body(items, new_run())
    started = time.perf_counter()
    response = client.post("/index", content=body, headers=headers)
    accepted = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"expected a job (202), got {response.status_code}: {response.text[:500]}")
    status = poll_job(client, response.json()["job_id"], timeout=3600)
    seconds = time.perf_counter() - started
    if status["state"] != "succeeded" or status["failed"]:
        raise RuntimeError(f"the job did not index every image: {status}")
    return {"mode": "background job", "images": len(items), "requests": 1, "seconds": seconds,
            "images_per_s": len(items) / seconds, "ms_per_request": 1e3 * seconds, "accepted_ms": 1e3 * accepted}


HEAD = ["mode", "images", "requests", "images/s", "ms/request", "server CPU ms/image", *LOAD_HEAD]


def cells(row: dict) -> list[str]:
    return [row["mode"], str(row["images"]), str(row["requests"]), f"{row['images_per_s']:.1f}",
            f"{row['ms_per_request']:,.0f}", f"{1e3 * row['load'].cpu_seconds()[1] / row['images']:.0f}",
            *row["load"].cells()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches of 4, a job of 8 images: a smoke run")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCH_SIZES, help="images per sync request")
    parser.add_argument("--images", type=int, default=256, help="images per mode")
    add_server_env(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    batches, count = ([4], 8) if args.quick else (args.batches, args.images)
    threshold = max(batches)
    if count <= threshold:
        parser.error(f"--images ({count}) must exceed the largest batch ({threshold}) to make a background job")
    items = grocery_items(count)
    print(f"# POST /index, {count} grocery test images per mode\n\n{table(HEAD, [])}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp, \
            running_server(Path(tmp), {"DEEPHASH_ASYNC_INDEX_THRESHOLD": str(threshold), **dict(args.server_env)}) \
            as server:
        pids = (server.process.pid,)
        runs = [partial(sync_run, server.client, items, batch) for batch in batches]
        runs.append(partial(job_run, server.client, items))
        for measure in runs:
            row, load = quiet(measure, pids)
            rows.append({**row, "load": load})
            print(table(HEAD, [cells(rows[-1])]).splitlines()[-1], flush=True)
    if not args.quick:
        note = (f"{count} grocery test JPEGs per mode with ids and metadata, into a LocalStore index (fsync on), "
                f"one client; DEEPHASH_ASYNC_INDEX_THRESHOLD={threshold} so that those batches stay synchronous, "
                "the rest default. The job is timed from its POST to its success.")
        save_section("index", " ".join(["python -m bench.index_throughput", *argv]),
                     f"{note}\n\n{table(HEAD, [cells(r) for r in rows])}", rows, args.out)


if __name__ == "__main__":
    main()

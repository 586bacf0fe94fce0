"""Bounded load test of the service: concurrent POST /search and POST /index clients on loopback.

Starts a server of its own (uvicorn in a subprocess, as the tests do) or uses
--url, runs for --seconds, then reports: requests, answers by status, p50,
p95 and p99 latency per endpoint and of the 503s, the server's resident
memory sampled over the run (mean of the first third against the last
third), and the encode queue's fill as /stats reports it.  Clients outnumber
the queue on purpose: the server must refuse the excess at once with 503 and
Retry-After, not queue it without bound.  Index clients upsert a fixed set of
ids, so the index does not grow and memory should not either.

    python -m bench.load_test                        # 60 s, 8 search and 2 index clients
    python -m bench.load_test --seconds 15 --save    # also writes bench/results/load_test.json
    python -m bench.load_test --url http://127.0.0.1:8000 --pid 1234   # a running server

Only loopback addresses are accepted as --url: this is a load generator.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.measure import percentiles, rss_bytes

RESULTS = Path(__file__).resolve().parent / "results"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
IDS_PER_INDEX_CLIENT = 16  # upserted over and over: the index stays this size per client
BACKOFF_S = 0.02  # a refused client waits this little before it asks again: the pressure stays on
SAMPLE_EVERY_S = 0.5


@dataclass(frozen=True)
class LoadConfig:
    seconds: float = 60.0
    search_clients: int = 8
    index_clients: int = 2
    index_batch: int = 2  # images per POST /index: synchronous (under the async threshold)
    queue_size: int = 8  # DEEPHASH_QUEUE_SIZE of a server started here


@dataclass
class Answer:
    endpoint: str
    status: int
    seconds: float
    retry_after: bool


@dataclass
class Samples:
    rss_bytes: list[int] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    capacity: int = 0


def latency_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {name: round(value * 1e3, 1) for name, value in percentiles(seconds).items()} | {"max": round(max(seconds) * 1e3, 1)}


def load_images(folder: Path, count: int) -> list[bytes]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not paths:
        raise SystemExit(f"no images under {folder}: pass --images")
    return [p.read_bytes() for p in paths]


async def search_client(client: httpx.AsyncClient, images: list[bytes], n: int) -> httpx.Response:
    return await client.post("/search", files={"image": ("query.jpg", images[n % len(images)], "image/jpeg")})


def index_client(number: int, batch: int) -> Callable[[httpx.AsyncClient, list[bytes], int], object]:
    async def send(client: httpx.AsyncClient, images: list[bytes], n: int) -> httpx.Response:
        slots = [(n * batch + j) % IDS_PER_INDEX_CLIENT for j in range(batch)]
        items = [{"id": f"load-{number}-{slot}", "metadata": {"client": number}} for slot in slots]
        uploads = [("images", (f"{slot}.jpg", images[(n + j) % len(images)], "image/jpeg"))
                   for j, slot in enumerate(slots)]
        return await client.post("/index", files=uploads, data={"items": json.dumps(items)})
    return send


async def drive(client: httpx.AsyncClient, endpoint: str, send, images: list[bytes], deadline: float,
                answers: list[Answer]) -> None:
    n = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = await send(client, images, n)
        answers.append(Answer(endpoint, response.status_code, time.perf_counter() - started,
                              "retry-after" in response.headers))
        if response.status_code == 503:
            await asyncio.sleep(BACKOFF_S)
        n += 1


async def sample(client: httpx.AsyncClient, pid: int | None, deadline: float, samples: Samples) -> None:
    while time.monotonic() < deadline:
        if pid is not None:
            samples.rss_bytes.append(rss_bytes(pid))
        queue = (await client.get("/stats")).json()["queue"]
        samples.admitted.append(queue["admitted"])
        samples.capacity = queue["capacity"]
        await asyncio.sleep(SAMPLE_EVERY_S)


async def run_load(url: str, config: LoadConfig, images: list[bytes], pid: int | None = None,
                   api_key: str | None = None) -> dict:
    """Drive the server at `url` for config.seconds; the report as a JSON-ready dict."""
    answers: list[Answer] = []
    samples = Samples()
    headers = {"X-API-Key": api_key} if api_key else {}
    clients = config.search_clients + config.index_clients + 1
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:
        await search_client(client, images, 0)  # the first encode warms the model up: not measured
        started = time.monotonic()
        deadline = started + config.seconds
        await asyncio.gather(
            *(drive(client, "/search", search_client, images, deadline, answers) for _ in range(config.search_clients)),
            *(drive(client, "/index", index_client(i, config.index_batch), images, deadline, answers)
              for i in range(config.index_clients)),
            sample(client, pid, deadline, samples))
        elapsed = time.monotonic() - started
    return report(config, answers, samples, elapsed)


def report(config: LoadConfig, answers: list[Answer], samples: Samples, elapsed: float) -> dict:
    by_endpoint: dict[str, list[Answer]] = {}
    for answer in answers:
        by_endpoint.setdefault(answer.endpoint, []).append(answer)
    refused = [a for a in answers if a.status == 503]
    third = max(1, len(samples.rss_bytes) // 3)
    rss = samples.rss_bytes
    memory = {} if not rss else {
        "samples": len(rss),
        "first_third_mean_mib": round(sum(rss[:third]) / third / 2**20, 1),
        "last_third_mean_mib": round(sum(rss[-third:]) / third / 2**20, 1),
        "growth_mib": round((sum(rss[-third:]) - sum(rss[:third])) / third / 2**20, 1),
        "max_mib": round(max(rss) / 2**20, 1)}
    return {
        "config": asdict(config),
        "seconds": round(elapsed, 1),
        "requests": len(answers),
        "per_second": round(len(answers) / elapsed, 1),
        "by_status": {endpoint: dict(sorted(Counter(str(a.status) for a in group).items()))
                      for endpoint, group in sorted(by_endpoint.items())},
        "errors": dict(sorted(Counter(str(a.status) for a in answers if a.status >= 400).items())),
        "latency_ms": {endpoint: latency_ms([a.seconds for a in group if a.status == 200])
                       for endpoint, group in sorted(by_endpoint.items())},
        "overload": {"refused": len(refused), "latency_ms": latency_ms([a.seconds for a in refused]),
                     "without_retry_after": sum(not a.retry_after for a in refused),
                     "queue_capacity": samples.capacity, "queue_max_admitted": max(samples.admitted, default=0)},
        "rss": memory,
    }


def server_settings(config: LoadConfig) -> dict[str, str]:
    """DEEPHASH_* settings of a server under this load: a queue smaller than the clients' demand."""
    return {"DEEPHASH_QUEUE_SIZE": str(config.queue_size), "DEEPHASH_BATCH_SIZE": str(min(8, config.queue_size)),
            "DEEPHASH_ASYNC_INDEX_THRESHOLD": str(min(32, config.queue_size))}


def start_server(config: LoadConfig, stack: ExitStack) -> tuple[str, int]:
    """A server of our own, in a temporary directory, stopped when the stack closes: (url, pid)."""
    # the tests' real-server helper, so that the tests and this script start a server the same way
    from tests.service.servers import Server

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deephash-load-")))
    server = Server(workdir, server_settings(config))
    stack.callback(server.close)
    server.start()
    return server.url, server.process.pid


def summary(result: dict) -> str:
    lines = [(f"{result['requests']} requests in {result['seconds']} s ({result['per_second']}/s); "
              f"answers {result['by_status']}")]
    for endpoint, figures in result["latency_ms"].items():
        lines.append(f"{endpoint} 200s: {figures} ms")
    overload = result["overload"]
    lines.append(f"503s: {overload['refused']}, {overload['latency_ms']} ms, "
                 f"{overload['without_retry_after']} without Retry-After; queue max {overload['queue_max_admitted']}"
                 f"/{overload['queue_capacity']}")
    if result["rss"]:
        rss = result["rss"]
        lines.append(f"RSS first third {rss['first_third_mean_mib']} MiB, last third {rss['last_third_mean_mib']} MiB"
                     f" (growth {rss['growth_mib']} MiB, max {rss['max_mib']} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tests.conftest import data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (default 60)")
    parser.add_argument("--search-clients", type=int, default=8)
    parser.add_argument("--index-clients", type=int, default=2)
    parser.add_argument("--index-batch", type=int, default=2, help="images per POST /index")
    parser.add_argument("--queue-size", type=int, default=8, help="DEEPHASH_QUEUE_SIZE of the server started here")
    parser.add_argument("--url", help="a running server on this machine, instead of starting one")
    parser.add_argument("--pid", type=int, help="that server's process id, to sample its memory")
    parser.add_argument("--api-key", help="X-API-Key for POST /index on a server that needs one")
    parser.add_argument("--images", type=Path, default=data_dir() / "grocery" / "dataset" / "test")
    parser.add_argument("--image-count", type=int, default=16)
    parser.add_argument("--save", action="store_true", help="also write bench/results/load_test.json")
    args = parser.parse_args(argv)
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(LOOPBACK)}), got {args.url}")
    config = LoadConfig(args.seconds, args.search_clients, args.index_clients, args.index_batch, args.queue_size)
    images = load_images(args.images, args.image_count)
    with ExitStack() as stack:
        url, pid = (args.url, args.pid) if args.url else start_server(config, stack)
        result = asyncio.run(run_load(url, config, images, pid, args.api_key))
    print(summary(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.save:
        (RESULTS / "load_test.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the service benchmarks share: the machine's load, grocery images, a real server, the results file.

The machine is shared (training jobs, tests), so every figure is stored with
the 1-minute load average and the CPU other processes took while it was
measured, and `quiet` repeats a measurement that others disturbed.  Niced
processes count too: with the kernel's autogroup scheduling (on here), a
niced job in another session still gets its fair share of the cores.  The three scripts each write
their own section of bench/results/service_bench.{json,md}; the Markdown is
rebuilt from the JSON, so running one script leaves the others' tables.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.index_bench import machine
from service.catalogue import CatalogueItem, read_catalogue
from tests.conftest import data_dir
from tests.service.servers import Server

RESULTS = Path(__file__).resolve().parent / "results"
# Sections of service_bench.md, in this order: script key -> heading.
SECTIONS = {"encode": "Encoding", "search": "/search latency", "index": "/index throughput"}
# Other processes may use this many cores before a measurement is repeated.
MAX_OTHERS_CORES = 0.25
_TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


@dataclass(frozen=True)
class Load:
    """How busy the machine was during one measurement, in cores (2 = both cores all the time)."""

    load_1min: float  # the load average at the end (it counts this benchmark too)
    others: float  # CPU of every other process: the disturbance
    nice: float  # the part of `others` that niced processes (training jobs) took
    this_process: float  # the benchmark itself (the clients, in the server benchmarks)
    servers: float  # the watched server processes
    seconds: float  # how long the measurement took

    def cpu_seconds(self) -> tuple[float, float]:
        """(this process, the servers): CPU seconds spent over the measurement."""
        return self.this_process * self.seconds, self.servers * self.seconds

    def cells(self) -> list[str]:
        return [f"{self.load_1min:.1f}", f"{self.others:.2f}"]


LOAD_HEAD = ["load avg", "others' CPU"]
LOAD_NOTE = ("*load avg*: the 1-minute load average at the end of the row's measurement (it counts the "
             "benchmark itself); *others' CPU*: cores used by other processes meanwhile (niced training jobs "
             "included: with autogroup scheduling they keep a fair share). A row was measured again (up to 3 "
             f"tries, the least disturbed kept) while others used more than {MAX_OTHERS_CORES} cores.")


def _machine_ticks() -> tuple[int, int]:
    """(busy, of which niced) clock ticks of the whole machine since boot."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return user + nice + system + irq + softirq, nice


def _process_ticks(pid: int | str) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # the process ended
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


@contextmanager
def watching(pids: tuple[int, ...] = ()) -> Iterator[list[Load]]:
    """Measure the machine's load over a block; the yielded list holds one Load once the block ends."""
    busy0, nice0 = _machine_ticks()
    self0, servers0 = _process_ticks("self"), sum(_process_ticks(p) for p in pids)
    start = time.monotonic()
    result: list[Load] = []
    yield result
    seconds = time.monotonic() - start
    busy1, nice1 = _machine_ticks()
    own = _process_ticks("self") - self0
    servers = sum(_process_ticks(p) for p in pids) - servers0
    ticks = seconds * _TICKS
    result.append(Load(os.getloadavg()[0], max(0.0, busy1 - busy0 - own - servers) / ticks, (nice1 - nice0) / ticks,
                       own / ticks, servers / ticks, seconds))


def quiet(measure: Callable[[], T], pids: tuple[int, ...] = (), tries: int = 3) -> tuple[T, Load]:
    """Run `measure`, again (up to `tries` times) while others disturbed it; the least disturbed run wins."""
    runs: list[tuple[T, Load]] = []
    for attempt in range(tries):
        with watching(pids) as load:
            value = measure()
        runs.append((value, load[0]))
        if load[0].others <= MAX_OTHERS_CORES:
            break
        if attempt + 1 < tries:
            print(f"  (others used {load[0].others:.2f} cores, load {load[0].load_1min:.1f}: measuring again)",
                  flush=True)
    return min(runs, key=lambda run: run[1].others)


def grocery_items(count: int, split: str = "test") -> list[CatalogueItem]:
    """`count` images spread evenly over a grocery split (so over its classes), with ids and metadata."""
    items = read_catalogue(data_dir() / "grocery" / "dataset" / f"{split}.txt")
    return [items[i * len(items) // count] for i in range(count)]


def multipart(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str] | None = None,
              ) -> tuple[bytes, dict[str, str]]:
    """A multipart body built once, so that clients spend no CPU on it per request."""
    request = httpx.Request("POST", "http://bench/", files=files, data=data)
    return request.read(), {"Content-Type": request.headers["Content-Type"]}


def add_server_env(parser: argparse.ArgumentParser) -> None:
    """--server-env NAME=VALUE ...: to measure other settings (DEEPHASH_BATCH_SIZE=4, OMP_NUM_THREADS=1, ...)."""
    def pair(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
        return name, value

    parser.add_argument("--server-env", type=pair, nargs="+", default=[], metavar="NAME=VALUE",
                        help="extra environment of the server process")


@contextmanager
def running_server(workdir: Path, env: dict[str, str]) -> Iterator[Server]:
    """`python -m service serve` with the default checkpoint, no sample catalogue and `env`, until the block ends."""
    server = Server(workdir, env).start()
    try:
        yield server
    finally:
        server.close()


def save_section(key: str, command: str, markdown: str, data: Any, out: Path = RESULTS) -> None:
    """Store one script's results in service_bench.json and rebuild service_bench.md from all sections."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "service_bench.json"
    document = json.loads(json_path.read_text()) if json_path.exists() else {}
    document[key] = {"machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command,
                     "markdown": markdown, "data": data}
    json_path.write_text(json.dumps(document, indent=1, default=_jsonable))
    intro = (f"Measured on {document[key]['machine']}, no GPU unless a table says so; the client runs on the "
             "same machine (loopback), so its CPU is taken from the server's. Each script writes its own table "
             "into `bench/results/service_bench.{md,json}`; add `--quick` for a smoke run of seconds that writes "
             "nothing.")
    parts = ["## Service performance", "", intro, "", LOAD_NOTE]
    for name, heading in SECTIONS.items():
        if name in document:
            section = document[name]
            parts += ["", f"### {heading}", "", f"`{section['command']}` ({section['measured']})", "",
                      section["markdown"]]
    (out / "service_bench.md").write_text("\n".join(parts) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, Load):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

"""Measurements the benchmarks share, so every table means the same by p99 or RSS."""
from __future__ import annotations

import math
from pathlib import Path

PERCENTILES = (50, 95, 99)


def percentiles(values: list[float], points: tuple[int, ...] = PERCENTILES) -> dict[str, float]:
    """Nearest-rank percentiles ({"p50": ...}): always an observed value, defined for a handful of samples; {} for none."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{p}": float(ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]) for p in points}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process on this machine, from /proc (no psutil needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} reports no VmRSS")

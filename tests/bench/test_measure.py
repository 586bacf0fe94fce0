"""The benchmarks' shared measurements: nearest-rank percentiles and resident memory."""
import mmap

import numpy as np

from bench.measure import percentiles, rss_bytes


def test_percentiles_are_nearest_rank_observations():
    assert percentiles([float(v) for v in range(100, 0, -1)]) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0, 1.0, 2.0], (0, 50, 100)) == {"p0": 1.0, "p50": 2.0, "p100": 3.0}
    assert percentiles([7.5]) == {"p50": 7.5, "p95": 7.5, "p99": 7.5}
    assert percentiles([]) == {}


def test_resident_memory_sees_touched_pages():
    # A fresh anonymous mapping, not a malloc'd array: after model.cpu_memory.keep_freed_memory
    # (the trainer's tests call it) malloc reuses heap pages that are resident already.
    with mmap.mmap(-1, 64 << 20) as block:
        before = rss_bytes()
        np.frombuffer(block, dtype=np.uint8)[:] = 1  # 64 MiB, written so it is resident
        assert rss_bytes() - before > 48 << 20

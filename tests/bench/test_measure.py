"""The benchmarks' shared measurements: nearest-rank percentiles and resident memory."""
import numpy as np

from bench.measure import percentiles, rss_bytes


def test_percentiles_are_nearest_rank_observations():
    assert percentiles([float(v) for v in range(100, 0, -1)]) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0, 1.0, 2.0], (0, 50, 100)) == {"p0": 1.0, "p50": 2.0, "p100": 3.0}
    assert percentiles([7.5]) == {"p50": 7.5, "p95": 7.5, "p99": 7.5}
    assert percentiles([]) == {}


def test_resident_memory_sees_touched_pages():
    before = rss_bytes()
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, written so it is resident
    assert rss_bytes() - before > 48 << 20
    del block

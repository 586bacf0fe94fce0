"""Prometheus metrics of one app instance (its own registry, so several apps can share a process)."""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("decode", "encode", "search", "total")
_LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram("deephash_stage_seconds", "Latency of one pipeline stage per request",
                                       ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.http_requests = Counter("deephash_http_requests", "HTTP requests by route and status",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("deephash_http_request_seconds", "HTTP request latency by route",
                                      ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("deephash_encode_batch_size", "Images per encoder call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.batch_seconds = Histogram("deephash_encode_batch_seconds", "Duration of one encoder call",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.images_encoded = Counter("deephash_images_encoded", "Images encoded", registry=r)
        self.images_rejected = Counter("deephash_images_rejected", "Uploads refused, by reason", ["reason"],
                                       registry=r)
        self.overloaded = Counter("deephash_overload_rejections", "Requests refused because the queue was full",
                                  registry=r)
        self.items_indexed = Counter("deephash_items_indexed", "Items written to the index", registry=r)
        self.jobs = Counter("deephash_jobs", "Indexing jobs by end state", ["state"], registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images_encoded.inc(size)

    def watch(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time (index size, queue depth)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

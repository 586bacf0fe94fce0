"""Catalogue items into the index: decode, encode, upsert, with a result per item.

Every way of indexing (POST /index, background jobs, the sample catalogue,
the CLI) goes through `index_items`, so they accept and refuse the same
images for the same reasons.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from index import HammingIndex
from service.catalogue import CatalogueItem
from service.resources import Resources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemResult:
    id: str
    status: Literal["indexed", "rejected"]
    reason: str | None = None


async def index_items(resources: Resources, items: Sequence[CatalogueItem], *, wait: bool = False) -> list[ItemResult]:
    """Index items; an item that cannot be decoded or stored is rejected alone, with its reason."""
    encoded = await resources.pipeline.encode([item.source for item in items], wait=wait)
    reasons: dict[str, str] = {item.id: error.detail for item, error in zip(items, encoded.errors) if error}
    good = [(item, code) for item, code in zip(items, encoded.codes) if code is not None]
    if good:
        reasons |= await asyncio.to_thread(upsert_each_or_alone, resources.index, good)
    indexed = len(items) - len(reasons)
    resources.metrics.items_indexed.inc(indexed)
    return [ItemResult(item.id, "rejected", reasons[item.id]) if item.id in reasons else ItemResult(item.id, "indexed")
            for item in items]


def upsert_each_or_alone(index: HammingIndex, items: list[tuple[CatalogueItem, np.ndarray]]) -> dict[str, str]:
    """Upsert in one batch; if the index refuses it, retry item by item to find who spoiled it.

    Returns id -> reason for the items the index refused (ValueError: bad id
    or metadata).  Store failures are not an item's fault and propagate.
    """
    try:
        index.upsert([i.id for i, _ in items], np.stack([c for _, c in items]), [i.metadata for i, _ in items])
        return {}
    except ValueError:
        pass
    reasons = {}
    for item, code in items:
        try:
            index.upsert([item.id], code[None, :], [item.metadata])
        except ValueError as exc:
            reasons[item.id] = str(exc)
    return reasons


@dataclass
class Progress:
    """How far a long indexing run is (for /ready, logs and the CLI)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    state: Literal["pending", "running", "done", "failed"] = "pending"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def index_catalogue(resources: Resources, items: Sequence[CatalogueItem], progress: Progress, *,
                          skip_present: bool,
                          on_chunk: Callable[[list[ItemResult], Progress], None] = lambda results, progress: None,
                          ) -> Progress:
    """Index a catalogue one chunk at a time, so live requests interleave with it.

    With `skip_present`, ids already in the index are not encoded again (a
    restart of a populated service costs no encoding).
    """
    todo = [item for item in items if not (skip_present and item.id in resources.index)]
    progress.total, progress.done, progress.state = len(todo), 0, "running"
    chunk = resources.settings.batch_size
    for start in range(0, len(todo), chunk):
        results = await index_items(resources, todo[start: start + chunk], wait=True)
        progress.done += len(results)
        progress.failed += sum(r.status == "rejected" for r in results)
        on_chunk(results, progress)
    progress.state = "done"
    return progress

"""Where an index persists: a local directory (the default), Redis (shared by replicas), or memory."""
from __future__ import annotations

from pathlib import Path

from index.stores.base import Batch, Fingerprint, Op, Snapshot, Store
from index.stores.memory import MemoryStore


def open_store(location: str | Path, **options: object) -> Store:
    """A store from a location: `redis://...`/`rediss://...`, `memory:`, or a directory path."""
    text = str(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        from index.stores.redis import RedisStore

        return RedisStore(text, **options)
    if text == "memory:":
        return MemoryStore()
    from index.stores.local import LocalStore

    return LocalStore(Path(text), **options)


__all__ = ["Batch", "Fingerprint", "MemoryStore", "Op", "Snapshot", "Store", "open_store"]

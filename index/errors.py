"""Errors the index raises beyond ValueError/KeyError for bad arguments."""
from __future__ import annotations


class StoreError(RuntimeError):
    """The index's store cannot be read or written (I/O, connection, permissions)."""


class CorruptStore(StoreError):
    """Stored data fails its checks; it is never loaded as if it were valid."""


class StoreLocked(StoreError):
    """Another process holds the store open for writing."""


class LogGap(StoreError):
    """Log entries this replica has not applied are gone (trimmed); it must reload."""


class FingerprintMismatch(ValueError):
    """The index holds codes from another model (or another code length)."""

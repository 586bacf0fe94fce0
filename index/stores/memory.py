"""A store that keeps nothing after the process ends: for tests, benchmarks and scratch indexes."""
from __future__ import annotations

from index.errors import FingerprintMismatch
from index.stores.base import Batch, Fingerprint, Snapshot, Store


class MemoryStore(Store):
    def __init__(self) -> None:
        self._fingerprint: Fingerprint | None = None
        self._log: list[tuple[int, Batch]] = []
        self._seq = 0

    @property
    def location(self) -> str:
        return "memory"

    def open(self, fingerprint: Fingerprint | None) -> tuple[Fingerprint, Snapshot | None]:
        if self._fingerprint is None:
            if fingerprint is None:
                raise ValueError("a new index needs its bits and model id")
            self._fingerprint = fingerprint
        elif fingerprint is not None and fingerprint != self._fingerprint:
            raise FingerprintMismatch(f"index holds {self._fingerprint}, not {fingerprint}")
        return self._fingerprint, None

    def append(self, batch: Batch) -> int:
        self._seq += 1
        self._log.append((self._seq, batch))
        return self._seq

    def read_log(self, after: int, timeout: float = 0.0) -> list[tuple[int, Batch]]:
        # The only reader is the index that wrote them: drop what it has applied.
        self._log = [entry for entry in self._log if entry[0] > after]
        return list(self._log)

    def should_snapshot(self) -> bool:
        return False

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self._log = [entry for entry in self._log if entry[0] > snapshot.seq]

"""What a background indexing job is, and the contract of where jobs persist.

A job's uploads are spooled to its store before the client gets its 202, and
its progress is recorded after each chunk is in the index.  So a job found
unfinished after a crash can be resumed from its last recorded chunk, and
every item it reported done before the crash is already searchable.
"""
from __future__ import annotations

import enum
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from service.catalogue import CatalogueItem


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class LeaseLost(RuntimeError):
    """Another instance took the job over (this one was silent for longer than the lease)."""


@dataclass
class Job:
    """One job's progress: `done` items processed (indexed or rejected), `failed` of them rejected."""

    id: str
    total: int
    owner: str
    state: JobState = JobState.QUEUED
    done: int = 0
    failed: int = 0
    attempts: int = 1
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.time)

    @classmethod
    def new(cls, total: int, owner: str) -> Job:
        return cls(id=uuid.uuid4().hex, total=total, owner=owner)

    @staticmethod
    def is_valid_id(job_id: str) -> bool:
        """Job ids are uuid4 hex; anything else is refused before it reaches a path or a key."""
        return re.fullmatch(r"[0-9a-f]{32}", job_id) is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**{**data, "state": JobState(data["state"])})


@dataclass(frozen=True)
class Upload:
    """One spooled item as it arrives: its id, metadata and an open stream of its bytes."""

    id: str
    metadata: dict[str, Any]
    stream: BinaryIO


@dataclass(frozen=True)
class Rejection:
    id: str
    reason: str


class JobStore(ABC):
    """Durable home of jobs: their records, spooled uploads and rejected items."""

    @abstractmethod
    def create(self, job: Job, uploads: Sequence[Upload]) -> None:
        """Spool the uploads and record the job; once this returns, the job survives a crash."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        ...

    @abstractmethod
    def rejections(self, job_id: str) -> list[Rejection]:
        ...

    @abstractmethod
    def load_items(self, job_id: str, start: int, stop: int) -> list[CatalogueItem]:
        """Spooled items [start, stop) with their bytes."""

    @abstractmethod
    def record(self, job: Job, rejected: Sequence[Rejection]) -> None:
        """Save the job's progress and newly rejected items at once; LeaseLost if it has another owner now."""

    @abstractmethod
    def finish(self, job: Job) -> None:
        """Save the final state and drop the spooled uploads; the report expires after the TTL."""

    @abstractmethod
    def touch(self, job_ids: Sequence[str], owner: str) -> None:
        """Heartbeat: the owner is alive and still holds these jobs."""

    @abstractmethod
    def claim_orphans(self, owner: str, lease_s: float) -> list[Job]:
        """Take over unfinished jobs whose owner is gone (attempts + 1), to resume them."""

    def close(self) -> None:
        """Release files, locks and connections."""

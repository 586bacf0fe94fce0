"""Jobs in a local directory (next to the embedded index): one folder per job.

    LOCK                  flock'd by the one process using the directory
    <id>/job.json         the Job record, replaced atomically
    <id>/items.json       [{id, metadata}] of the spooled uploads, in order
    <id>/blobs/<n>        the n-th upload's bytes
    <id>/rejected.jsonl   one {id, reason} line per rejected item

A job folder is written as <id>.tmp and renamed when complete.  rejected.jsonl
is appended before job.json is replaced, so after a crash it may hold lines
beyond job.json's count; they are cut when the job is resumed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from service.catalogue import CatalogueItem
from service.jobs.store import Job, JobStore, Rejection, Upload


class JobsDirLocked(RuntimeError):
    """Another process uses the jobs directory."""


class LocalJobStore(JobStore):
    def __init__(self, path: Path, ttl_s: float) -> None:
        self.path = path
        self.ttl_s = ttl_s
        path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JobsDirLocked(f"{path} is used by another process; give each instance its own "
                                    "DEEPHASH_JOBS_PATH, or share jobs through Redis") from None
            raise
        for leftover in path.glob("*.tmp"):
            shutil.rmtree(leftover)  # a job whose 202 was never sent

    def create(self, job: Job, uploads: Sequence[Upload]) -> None:
        staging = self.path / f"{job.id}.tmp"
        (staging / "blobs").mkdir(parents=True)
        for n, upload in enumerate(uploads):
            with open(staging / "blobs" / str(n), "wb") as f:
                shutil.copyfileobj(upload.stream, f)
        _write_json(staging / "items.json", [{"id": u.id, "metadata": u.metadata} for u in uploads])
        (staging / "rejected.jsonl").touch()
        _write_json(staging / "job.json", job.to_dict())
        staging.rename(self.path / job.id)

    def get(self, job_id: str) -> Job | None:
        try:
            return Job.from_dict(json.loads((self._dir(job_id) / "job.json").read_text()))
        except FileNotFoundError:
            return None

    def rejections(self, job_id: str) -> list[Rejection]:
        job = self.get(job_id)
        if job is None:
            return []
        lines = (self._dir(job_id) / "rejected.jsonl").read_text().splitlines()[: job.failed]
        return [Rejection(**json.loads(line)) for line in lines]

    def load_items(self, job_id: str, start: int, stop: int) -> list[CatalogueItem]:
        folder = self._dir(job_id)
        listed = json.loads((folder / "items.json").read_text())
        return [CatalogueItem(e["id"], e["metadata"], folder / "blobs" / str(n))
                for n, e in enumerate(listed[start:stop], start=start)]

    def record(self, job: Job, rejected: Sequence[Rejection]) -> None:
        # The directory lock makes this process the only owner: no lease to check.
        folder = self._dir(job.id)
        if rejected:
            with open(folder / "rejected.jsonl", "a") as f:
                f.writelines(json.dumps({"id": r.id, "reason": r.reason}) + "\n" for r in rejected)
        job.updated_at = time.time()
        _write_json(folder / "job.json", job.to_dict())

    def finish(self, job: Job) -> None:
        self.record(job, [])
        folder = self._dir(job.id)
        shutil.rmtree(folder / "blobs", ignore_errors=True)
        (folder / "items.json").unlink(missing_ok=True)
        self._purge_expired()

    def touch(self, job_ids: Sequence[str], owner: str) -> None:
        """Nothing to do: holding the directory lock is the heartbeat."""

    def claim_orphans(self, owner: str, lease_s: float) -> list[Job]:
        # Whoever held an unfinished job before us is gone: we hold the lock now.
        claimed = []
        for record in sorted(self.path.glob("*/job.json")):
            job = self.get(record.parent.name)
            if job is None or job.state.final or job.owner == owner:
                continue
            lines = (record.parent / "rejected.jsonl").read_text().splitlines(keepends=True)
            (record.parent / "rejected.jsonl").write_text("".join(lines[: job.failed]))
            job.owner, job.attempts = owner, job.attempts + 1
            self.record(job, [])
            claimed.append(job)
        return claimed

    def close(self) -> None:
        os.close(self._lock_fd)

    def _dir(self, job_id: str) -> Path:
        if not Job.is_valid_id(job_id):
            raise FileNotFoundError(job_id)
        return self.path / job_id

    def _purge_expired(self) -> None:
        deadline = time.time() - self.ttl_s
        for record in self.path.glob("*/job.json"):
            job = self.get(record.parent.name)
            if job is not None and job.state.final and job.updated_at < deadline:
                shutil.rmtree(record.parent, ignore_errors=True)


def _write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(temporary, path)

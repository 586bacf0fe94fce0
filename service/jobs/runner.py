"""Runs background indexing jobs: one at a time per instance, chunk by chunk, resumable.

Each instance heartbeats the jobs it holds.  It also looks for unfinished
jobs whose owner fell silent (a crash, a kill, a lost replica) and resumes
them where their progress was last recorded; a job interrupted more than
MAX_ATTEMPTS times is failed instead, so one poisonous upload cannot crash
the service forever.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from service.indexing import index_items
from service.jobs.store import Job, JobState, JobStore, LeaseLost, Rejection, Upload
from service.resources import Resources

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class JobRunner:
    def __init__(self, store: JobStore, resources: Resources) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex
        self._resources = resources
        self._lease_s = resources.settings.job_lease_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._held: set[str] = set()  # queued or running here
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self._adopt_orphans()
        self._tasks = [asyncio.create_task(self._work(), name="jobs"),
                       asyncio.create_task(self._watch(), name="jobs-watch")]

    async def stop(self) -> None:
        """Stop where we are: the job in progress stays unfinished and is resumed by the next owner."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.close)

    async def submit(self, uploads: Sequence[Upload]) -> Job:
        """Spool the uploads and queue the job; returns once the job would survive a crash."""
        job = Job.new(total=len(uploads), owner=self.owner)
        await asyncio.to_thread(self.store.create, job, uploads)
        self._hold(job.id)
        log.info("job queued", extra={"job_id": job.id, "total": job.total})
        return job

    async def status(self, job_id: str) -> tuple[Job, list[Rejection]] | None:
        if not Job.is_valid_id(job_id):
            return None
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None:
            return None
        return job, await asyncio.to_thread(self.store.rejections, job_id)

    def _hold(self, job_id: str) -> None:
        self._held.add(job_id)
        self._queue.put_nowait(job_id)

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except LeaseLost:
                log.warning("job taken over by another instance", extra={"job_id": job_id})
            except Exception:  # noqa: BLE001 - the store failed us; the job's lease lapses and it is resumed
                log.exception("job could not be recorded", extra={"job_id": job_id})
            finally:
                self._held.discard(job_id)

    async def _run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None or job.state.final:
            return
        if job.attempts > MAX_ATTEMPTS:
            await self._finish(job, JobState.FAILED, f"interrupted {job.attempts - 1} times; giving up "
                               f"after {job.done} of {job.total} items (those are indexed)")
            return
        job.state = JobState.RUNNING
        await asyncio.to_thread(self.store.record, job, [])
        chunk = self._resources.settings.batch_size
        try:
            while job.done < job.total:
                items = await asyncio.to_thread(self.store.load_items, job.id, job.done, job.done + chunk)
                results = await index_items(self._resources, items, wait=True)
                rejected = [Rejection(r.id, r.reason or "") for r in results if r.status == "rejected"]
                job.done += len(results)
                job.failed += len(rejected)
                await asyncio.to_thread(self.store.record, job, rejected)
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the job, which is what the client watches
            log.exception("job failed", extra={"job_id": job.id})
            await self._finish(job, JobState.FAILED, f"{type(exc).__name__}: {exc}")
            return
        await self._finish(job, JobState.SUCCEEDED)

    async def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        job.state, job.error = state, error
        await asyncio.to_thread(self.store.finish, job)
        self._resources.metrics.jobs.labels(state.value).inc()
        log.info("job finished", extra={"job_id": job.id, "state": state.value, "done": job.done,
                                        "failed": job.failed, "total": job.total})

    async def _adopt_orphans(self) -> None:
        for job in await asyncio.to_thread(self.store.claim_orphans, self.owner, self._lease_s):
            log.warning("resuming an interrupted job", extra={"job_id": job.id, "done": job.done,
                                                              "total": job.total, "attempt": job.attempts})
            self._hold(job.id)

    async def _watch(self) -> None:
        """Heartbeat what we hold; adopt what others dropped."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await asyncio.to_thread(self.store.touch, list(self._held), self.owner)
                await self._adopt_orphans()
            except Exception:  # noqa: BLE001 - a store outage must not end the watch
                log.exception("job heartbeat failed; retrying")

"""Background indexing jobs: their store (a local directory, or Redis shared by replicas) and their runner."""
from __future__ import annotations

from service.jobs.local import LocalJobStore
from service.jobs.redis import RedisJobStore
from service.jobs.store import JobStore
from service.settings import Settings


def open_job_store(settings: Settings) -> JobStore:
    """Jobs live where the index lives: in Redis when there is a URL, else in a local directory."""
    if settings.redis_url:
        return RedisJobStore(settings.redis_url, settings.redis_namespace, settings.job_ttl_s)
    return LocalJobStore(settings.jobs_path, settings.job_ttl_s)

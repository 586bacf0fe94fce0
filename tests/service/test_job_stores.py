"""Both job stores honour one contract: spool, progress, hand-over of orphaned jobs, clean-up."""
from __future__ import annotations

import io
import time

import pytest

from service.jobs.local import JobsDirLocked, LocalJobStore
from service.jobs.redis import RedisJobStore
from service.jobs.store import Job, JobState, LeaseLost, Rejection, Upload
from tests.service.conftest import REDIS_URL

TTL_S = 3600


@pytest.fixture(params=["local", "redis"])
def make_store(request, tmp_path):
    """Opens the store as a new process would (the local one only after the previous one closed)."""
    opened = []

    def make():
        if request.param == "local":
            if opened:
                opened[-1].close()
            store = LocalJobStore(tmp_path / "jobs", TTL_S)
        else:
            store = RedisJobStore(REDIS_URL, request.getfixturevalue("redis_namespace"), TTL_S)
        opened.append(store)
        return store

    yield make
    opened[-1].close()


def uploads(n: int) -> list[Upload]:
    return [Upload(f"item-{i}", {"i": i}, io.BytesIO(f"bytes of {i}".encode())) for i in range(n)]


def test_spooled_items_come_back_in_slices(make_store):
    store = make_store()
    job = Job.new(total=5, owner="a")
    store.create(job, uploads(5))
    assert store.get(job.id) == job
    items = store.load_items(job.id, 2, 4)
    assert [(i.id, i.metadata) for i in items] == [("item-2", {"i": 2}), ("item-3", {"i": 3})]
    # the local store hands back the spooled files, Redis the bytes
    assert [i.source if isinstance(i.source, bytes) else i.source.read_bytes() for i in items] == [
        b"bytes of 2", b"bytes of 3"]


def test_progress_rejections_and_finish(make_store):
    store = make_store()
    job = Job.new(total=3, owner="a")
    store.create(job, uploads(3))
    job.state, job.done, job.failed = JobState.RUNNING, 2, 1
    store.record(job, [Rejection("item-1", "the image file is empty")])
    assert store.get(job.id).done == 2
    assert store.rejections(job.id) == [Rejection("item-1", "the image file is empty")]
    job.state, job.done = JobState.SUCCEEDED, 3
    store.finish(job)
    finished = store.get(job.id)
    assert finished.state is JobState.SUCCEEDED and finished.done == 3
    assert store.claim_orphans("b", lease_s=0) == []


def test_an_orphaned_job_is_handed_over(make_store):
    store = make_store()
    job = Job.new(total=4, owner="dead")
    store.create(job, uploads(4))
    job.done = 2
    store.record(job, [])
    time.sleep(0.05)

    heir = make_store()
    [claimed] = heir.claim_orphans("heir", lease_s=0.01)
    assert (claimed.id, claimed.owner, claimed.attempts, claimed.done) == (job.id, "heir", 2, 2)
    assert heir.claim_orphans("heir", lease_s=0.01) == [], "one's own job is no orphan"


def test_redis_refuses_progress_from_an_owner_that_lost_its_lease(redis_namespace):
    store = RedisJobStore(REDIS_URL, redis_namespace, TTL_S)
    job = Job.new(total=2, owner="slow")
    store.create(job, uploads(2))
    time.sleep(0.05)
    store.claim_orphans("fast", lease_s=0.01)
    assert store.claim_orphans("other", lease_s=60) == [], "a freshly claimed job is no orphan"
    with pytest.raises(LeaseLost):
        store.record(job, [])
    store.touch([job.id], "slow")  # a stale owner's heartbeat changes nothing
    assert store.get(job.id).owner == "fast"
    store.close()


def test_one_process_per_local_jobs_directory(tmp_path):
    first = LocalJobStore(tmp_path, TTL_S)
    with pytest.raises(JobsDirLocked, match="another process"):
        LocalJobStore(tmp_path, TTL_S)
    first.close()
    LocalJobStore(tmp_path, TTL_S).close()


def test_unknown_and_malformed_job_ids(make_store):
    store = make_store()
    assert store.get("0" * 32) is None
    assert Job.is_valid_id("0" * 32) and not Job.is_valid_id("../etc") and not Job.is_valid_id("active")

"""Jobs in Redis, shared by every replica of one catalogue.  Keys under `<namespace>:jobs:`:

    active           set of unfinished job ids
    <id>             hash: the Job record (one field per attribute)
    <id>:items       string: [{id, metadata}] of the spooled uploads, in order
    <id>:blobs       hash: n -> the n-th upload's bytes
    <id>:rejected    list: one {id, reason} JSON per rejected item

Every change of a job is a Lua script that first checks the caller still
owns it, so a replica that lost its lease cannot overwrite the progress of
the replica that took the job over; progress and rejected items change in
the same script, so they always agree.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence

import redis

from service.catalogue import CatalogueItem
from service.jobs.store import Job, JobStore, LeaseLost, Rejection, Upload

# KEYS: job, rejected, active, items, blobs; ARGV: owner, final ("1"/"0"), ttl, n_rejected, rejected..., fields...
_RECORD = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return redis.error_reply('LEASE job is held by another instance')
end
local n = tonumber(ARGV[4])
for i = 5, 4 + n do redis.call('RPUSH', KEYS[2], ARGV[i]) end
for i = 5 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] == '1' then
  redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
  redis.call('DEL', KEYS[4], KEYS[5])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: active; ARGV: prefix, owner, now, lease.  Takes unfinished jobs whose heartbeat is stale.
_CLAIM = """
local claimed = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local beat = tonumber(redis.call('HGET', key, 'heartbeat') or '0')
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], id)
  elseif beat < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
    redis.call('HSET', key, 'owner', ARGV[2], 'heartbeat', ARGV[3])
    redis.call('HINCRBY', key, 'attempts', 1)
    table.insert(claimed, id)
  end
end
return claimed
"""

# KEYS: job keys; ARGV: owner, now
_TOUCH = """
for _, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'owner') == ARGV[1] then redis.call('HSET', key, 'heartbeat', ARGV[2]) end
end
return 1
"""

_SPOOL_SLICE_BYTES = 32 << 20

_NUMBERS = {"total": int, "done": int, "failed": int, "attempts": int,
            "created_at": float, "updated_at": float, "heartbeat": float}


class RedisJobStore(JobStore):
    def __init__(self, url: str, namespace: str, ttl_s: int) -> None:
        self.prefix = f"{namespace}:jobs:"
        self.ttl_s = ttl_s
        self._client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._record = self._client.register_script(_RECORD)
        self._claim = self._client.register_script(_CLAIM)
        self._touch = self._client.register_script(_TOUCH)

    def create(self, job: Job, uploads: Sequence[Upload]) -> None:
        key = self._key(job.id)
        # Uploads go in slices, so a large request is never all in memory at once.  Until the
        # job record below exists they are anonymous garbage, and expire as such.
        pipe, pending = self._client.pipeline(transaction=False), 0
        for n, upload in enumerate(uploads):
            data = upload.stream.read()
            pipe.hset(f"{key}:blobs", str(n), data)
            pending += len(data)
            if pending >= _SPOOL_SLICE_BYTES:
                pipe.expire(f"{key}:blobs", self.ttl_s).execute()
                pending = 0
        pipe.expire(f"{key}:blobs", self.ttl_s).execute()
        with self._client.pipeline(transaction=True) as commit:
            commit.set(f"{key}:items", json.dumps([{"id": u.id, "metadata": u.metadata} for u in uploads]))
            commit.hset(key, mapping=_fields(job))
            commit.sadd(f"{self.prefix}active", job.id)
            commit.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self._client.hgetall(self._key(job_id))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        data = {k: _NUMBERS[k](v) if k in _NUMBERS else v for k, v in data.items()}
        data["error"] = data.get("error") or None
        return Job.from_dict(data)

    def rejections(self, job_id: str) -> list[Rejection]:
        return [Rejection(**json.loads(r)) for r in self._client.lrange(f"{self._key(job_id)}:rejected", 0, -1)]

    def load_items(self, job_id: str, start: int, stop: int) -> list[CatalogueItem]:
        key = self._key(job_id)
        listed = json.loads(self._client.get(f"{key}:items"))[start:stop]
        blobs = self._client.hmget(f"{key}:blobs", [str(n) for n in range(start, start + len(listed))])
        return [CatalogueItem(e["id"], e["metadata"], blob) for e, blob in zip(listed, blobs)]

    def record(self, job: Job, rejected: Sequence[Rejection]) -> None:
        self._save(job, rejected, final=False)

    def finish(self, job: Job) -> None:
        self._save(job, [], final=True)

    def touch(self, job_ids: Sequence[str], owner: str) -> None:
        if job_ids:
            self._touch(keys=[self._key(i) for i in job_ids], args=[owner, time.time()])

    def claim_orphans(self, owner: str, lease_s: float) -> list[Job]:
        ids = self._claim(keys=[f"{self.prefix}active"], args=[self.prefix, owner, time.time(), lease_s])
        return [job for job in (self.get(i.decode()) for i in ids) if job is not None]

    def close(self) -> None:
        self._client.close()

    def _save(self, job: Job, rejected: Sequence[Rejection], final: bool) -> None:
        job.updated_at = job.heartbeat = time.time()
        key = self._key(job.id)
        fields = [x for pair in _fields(job).items() for x in pair]
        try:
            self._record(keys=[key, f"{key}:rejected", f"{self.prefix}active", f"{key}:items", f"{key}:blobs"],
                         args=[job.owner, "1" if final else "0", self.ttl_s, len(rejected),
                               *[json.dumps({"id": r.id, "reason": r.reason}) for r in rejected], *fields])
        except redis.ResponseError as exc:
            if str(exc).startswith("LEASE"):
                raise LeaseLost(f"job {job.id} is held by another instance") from None
            raise

    def _key(self, job_id: str) -> str:
        return self.prefix + job_id


def _fields(job: Job) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in job.to_dict().items()}

"""Background indexing jobs: progress and end state."""
from __future__ import annotations

from fastapi import APIRouter

from service.deps import Jobs
from service.errors import ApiError
from service.routes.openapi import error_responses
from service.schemas import ItemResult, JobStatus

router = APIRouter(tags=["catalogue"])


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=error_responses(404))
async def get_job(job_id: str, jobs: Jobs) -> JobStatus:
    """Progress of a background indexing job (done / total / failed), its end state and rejected items."""
    found = await jobs.status(job_id)
    if found is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r} (finished jobs are kept for a while, "
                                             "then forgotten)")
    job, rejections = found
    return JobStatus(id=job.id, state=job.state.value, total=job.total, done=job.done, failed=job.failed,
                     indexed=job.done - job.failed, attempts=job.attempts, error=job.error,
                     created_at=job.created_at, updated_at=job.updated_at,
                     rejected=[ItemResult(id=r.id, status="rejected", reason=r.reason) for r in rejections])

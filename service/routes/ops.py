"""Operations: liveness, readiness, statistics and Prometheus metrics."""
from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import State
from service.resources import Resources
from service.schemas import IndexingProgress, Ready, Stats

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


async def _store_answers(res: Resources) -> bool:
    try:
        return await asyncio.wait_for(asyncio.to_thread(res.index.store.ping), PING_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
        log.warning("index store did not answer a ping", exc_info=True)
        return False


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready, "description": "not ready; see reasons"}})
async def ready(state: State) -> Ready | JSONResponse:
    """Readiness: model loaded, index open, its store answering, and the sample catalogue indexed."""
    res = state.resources
    # The model and the index are loaded before the server accepts its first request.
    checks = {"model": True, "index": True, "store": await _store_answers(res)}
    reasons = [] if checks["store"] else [f"index store {res.index.store.location} does not answer"]
    catalogue = state.sample_catalogue
    if catalogue is not None:
        checks["sample_catalogue"] = catalogue.state == "done"
        if catalogue.state != "done":
            reasons.append(f"sample catalogue {catalogue.state}: {catalogue.done}/{catalogue.total} images"
                           + (f" ({catalogue.error})" if catalogue.error else ""))
    body = Ready(ready=all(checks.values()), checks=checks, reasons=reasons,
                 sample_catalogue=IndexingProgress(**catalogue.as_dict()) if catalogue else None)
    return body if body.ready else JSONResponse(body.model_dump(), status_code=503)


@router.get("/stats", response_model=Stats)
async def stats(state: State) -> Stats:
    """What is being served: item count, code length, model fingerprint, index store, device."""
    res = state.resources
    catalogue = state.sample_catalogue
    return Stats(count=len(res.index), bits=res.encoder.bits, model_fingerprint=res.encoder.fingerprint,
                 index_store=res.index.store.location, device=res.encoder.device,
                 checkpoint=str(res.settings.checkpoint),
                 queue={"admitted": res.pipeline.batcher.admitted, "capacity": res.pipeline.batcher.capacity},
                 sample_catalogue=IndexingProgress(**catalogue.as_dict()) if catalogue else None)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: per-stage latency histograms, request and image counters, queue and index gauges."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

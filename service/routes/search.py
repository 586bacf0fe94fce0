"""Search by image upload, or from an item already in the index."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, UploadFile

from service.deps import Multipart, Res, Search
from service.resources import Resources
from service.routes.openapi import error_responses
from service.routes.items import lookup_item
from service.schemas import Hit, SearchResponse, SimilarResponse, Timings

router = APIRouter(tags=["search"])


async def nearest(res: Resources, code: np.ndarray, k: int, max_distance: int | None) -> list[Hit]:
    """The index's top-k for one packed code (in a thread: a large index takes a while to scan)."""
    result = await asyncio.to_thread(res.index.search, code[None, :], k, max_distance)
    return [Hit(id=h.id, distance=h.distance, metadata=h.metadata) for h in result.hits(0)]


@router.post("/search", response_model=SearchResponse, dependencies=[Multipart],
             responses=error_responses(400, 413, 415, 422, 503))
async def search(image: Annotated[UploadFile, File(description="the query image: JPEG, PNG, WebP, GIF or BMP")],
                 params: Search, res: Res) -> SearchResponse:
    """Find the catalogue items whose codes are nearest (in Hamming distance) to an uploaded image's code."""
    started = time.perf_counter()
    encoded = await res.pipeline.encode([await image.read()])
    if encoded.errors[0] is not None:
        raise encoded.errors[0]
    code = encoded.codes[0]
    searched = time.perf_counter()
    hits = await nearest(res, code, params.k, params.max_distance)
    finished = time.perf_counter()
    res.metrics.stage_seconds.labels("search").observe(finished - searched)
    res.metrics.stage_seconds.labels("total").observe(finished - started)
    timings = Timings(decode_ms=encoded.decode_s * 1e3, encode_ms=encoded.encode_s * 1e3,
                      search_ms=(finished - searched) * 1e3, total_ms=(finished - started) * 1e3)
    return SearchResponse(code=code.tobytes().hex(), k=params.k, count=len(hits),
                          hits=hits, timings=timings)


# Declared before items' GET /items/{id}, whose path parameter would otherwise swallow "/similar".
@router.get("/items/{item_id:path}/similar", response_model=SimilarResponse, responses=error_responses(404, 422))
async def similar(item_id: str, params: Search, res: Res) -> SimilarResponse:
    """Find the items nearest to an item already in the index (the item itself is left out)."""
    item = await lookup_item(res, item_id)
    code = np.frombuffer(item.code, dtype=np.uint8)
    hits = [h for h in await nearest(res, code, params.k + 1, params.max_distance) if h.id != item_id][: params.k]
    return SimilarResponse(id=item_id, code=item.code.hex(), k=params.k, count=len(hits), hits=hits)

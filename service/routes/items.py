"""Catalogue items: bulk indexing (upsert) from a multipart upload, lookup and deletion."""
from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from index import Item
from service.catalogue import CatalogueItem
from service.deps import ApiKey, Jobs, Multipart, Res, SettingsDep, invalid
from service.errors import ApiError
from service.indexing import index_items
from service.jobs.store import Upload
from service.resources import Resources
from service.routes.openapi import error_responses
from service.schemas import DeleteResponse, IndexEntry, IndexResponse, ItemResponse, ItemResult, JobAccepted

router = APIRouter(tags=["catalogue"])

_ENTRIES = TypeAdapter(list[IndexEntry])
_DECODER = json.JSONDecoder()
_BLANK = re.compile(r"[ \t\n\r]*")

ITEMS_FIELD = (
    "JSON array with one {\"id\", \"metadata\"} object per image file, in the order of the files. "
    "Without it, each file's name is its id and its metadata is empty."
)
ITEMS_EXAMPLE = json.dumps([
    {"id": "sku-1042", "metadata": {"name": "Granny Smith", "price": 0.45, "image": "https://shop.example/1042.jpg"}},
    {"id": "sku-1043", "metadata": {"name": "Pink Lady", "price": 0.52}},
])


async def lookup_item(res: Resources, item_id: str) -> Item:
    try:
        return await asyncio.to_thread(res.index.get, item_id)
    except KeyError:
        raise ApiError(404, "item_not_found", f"no item with id {item_id!r} in the index") from None


def parse_entries(items: str | None, images: list[UploadFile]) -> list[IndexEntry]:
    """Pair each file with its id and metadata (see ITEMS_FIELD), or say precisely what does not fit."""
    if items is None:
        unnamed = [n for n, f in enumerate(images) if not f.filename]
        if unnamed:
            raise invalid("items", f"files {unnamed[:5]} have no file name to use as id; send `items`", "form")
        entries = [IndexEntry(id=f.filename or "") for f in images]
    else:
        listed, more = _json_array_head(items, len(images))
        if more or len(listed) != len(images):
            count = f"more than {len(listed)}" if more else str(len(listed))
            raise invalid("items", f"lists {count} entries for {len(images)} image files", "form")
        try:
            entries = _ENTRIES.validate_json(f"[{','.join(listed)}]")
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("form", "items", *e["loc"])} for e in exc.errors()[:10]]) \
                from None
    seen: set[str] = set()
    duplicates = sorted({e.id for e in entries if e.id in seen or seen.add(e.id)})
    if duplicates:
        raise invalid("items", f"duplicate ids in one request: {duplicates[:5]}", "form")
    return entries


def _json_array_head(text: str, limit: int) -> tuple[list[str], bool]:
    """The JSON texts of the first `limit` elements of the JSON array `text`, and whether more follow.

    Only those elements are parsed: a million-entry array sent with one image
    costs as little to refuse as a right-sized one (parsed whole, it took
    seconds and most of a gigabyte).  Their texts, not their values, are
    returned, so that pydantic validates them as JSON, as it validates the rest.
    """
    try:
        pos = _skip_blank(text, 0)
        if not text.startswith("[", pos):
            raise invalid("items", "Input should be a JSON array of {id, metadata} objects", "form")
        pos = _skip_blank(text, pos + 1)
        elements: list[str] = []
        if not text.startswith("]", pos):
            while True:
                if len(elements) == limit:
                    return elements, True
                start = pos
                pos = _DECODER.raw_decode(text, pos)[1]
                elements.append(text[start:pos])
                pos = _skip_blank(text, pos)
                if text.startswith("]", pos):
                    break
                if not text.startswith(",", pos):
                    raise json.JSONDecodeError("Expecting ',' or ']'", text, pos)
                pos = _skip_blank(text, pos + 1)
        end = _skip_blank(text, pos + 1)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return elements, False
    except json.JSONDecodeError as exc:
        raise invalid("items", f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", "form") from None
    except RecursionError:
        raise invalid("items", "Invalid JSON: nested too deeply", "form") from None


def _skip_blank(text: str, pos: int) -> int:
    return _BLANK.match(text, pos).end()


@router.post("/index", response_model=IndexResponse, dependencies=[ApiKey, Multipart],
             responses={202: {"model": JobAccepted, "description": "more images than DEEPHASH_ASYNC_INDEX_THRESHOLD: "
                                                                    "queued as a background job; poll status_url"},
                        **error_responses(400, 401, 413, 415, 422, 503)})
async def index_images(
    images: Annotated[list[UploadFile], File(description="the image files, one per item")],
    res: Res, jobs: Jobs, settings: SettingsDep,
    items: Annotated[str | None, Form(description=ITEMS_FIELD, examples=[ITEMS_EXAMPLE])] = None,
) -> IndexResponse | JSONResponse:
    """Add or replace catalogue items (upsert by id), each image with its id and metadata; one result per item."""
    entries = parse_entries(items, images)
    if len(images) > settings.async_index_threshold:
        job = await jobs.submit([Upload(e.id, e.metadata, f.file) for e, f in zip(entries, images)])
        accepted = JobAccepted(job_id=job.id, state=job.state.value, total=job.total, status_url=f"/jobs/{job.id}")
        return JSONResponse(accepted.model_dump(), status_code=202)
    sources = [CatalogueItem(e.id, e.metadata, await f.read()) for e, f in zip(entries, images)]
    results = [ItemResult(id=r.id, status=r.status, reason=r.reason) for r in await index_items(res, sources)]
    indexed = sum(r.status == "indexed" for r in results)
    return IndexResponse(indexed=indexed, rejected=len(results) - indexed, results=results)


@router.get("/items/{item_id:path}", response_model=ItemResponse, responses=error_responses(404))
async def get_item(item_id: str, res: Res) -> ItemResponse:
    """An indexed item: its code and stored metadata."""
    item = await lookup_item(res, item_id)
    return ItemResponse(id=item.id, code=item.code.hex(), metadata=item.metadata)


@router.delete("/items/{item_id:path}", response_model=DeleteResponse, dependencies=[ApiKey],
               responses=error_responses(401, 404))
async def delete_item(item_id: str, res: Res) -> DeleteResponse:
    """Remove an item from the index."""
    try:
        removed = await asyncio.to_thread(res.index.remove, [item_id])
    except ValueError as exc:  # an id the index could never hold (empty, too long)
        raise ApiError(400, "invalid_id", str(exc)) from None
    if removed == 0:
        raise ApiError(404, "item_not_found", f"no item with id {item_id!r} in the index")
    return DeleteResponse(id=item_id, deleted=True)

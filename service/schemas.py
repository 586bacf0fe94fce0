"""Request and response bodies as the API documents them (OpenAPI examples included)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_GOLDEN = {"name": "Golden-Delicious", "category": "Apple",
           "image": "/catalogue/train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg"}


class ErrorBody(BaseModel):
    error: str = Field(description="stable machine-readable code", examples=["unsupported_image"])
    detail: str = Field(description="what was wrong, for people",
                        examples=["image format TIFF is not accepted; accepted formats: JPEG, PNG, WEBP, GIF, BMP"])
    request_id: str | None = Field(None, examples=["4f1c2a9e0b7d4c11"])
    errors: list[dict[str, str]] | None = Field(None, description="validation errors: one {field, message} each")


class Hit(BaseModel):
    id: str
    distance: int = Field(description="Hamming distance to the query code")
    metadata: dict[str, Any]


class Timings(BaseModel):
    decode_ms: float = Field(description="bytes to model input: decoding, checks, resizing")
    encode_ms: float = Field(description="waiting for a batch and running the network")
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "code": "9c3e51f0a2b4d867", "k": 3, "count": 2,
        "hits": [{"id": "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg", "distance": 0,
                  "metadata": _GOLDEN},
                 {"id": "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_014.jpg", "distance": 3,
                  "metadata": {**_GOLDEN, "image": "/catalogue/train/Fruit/Apple/Golden-Delicious/"
                                                   "Golden-Delicious_014.jpg"}}],
        "timings": {"decode_ms": 6.1, "encode_ms": 41.8, "search_ms": 0.2, "total_ms": 48.9}}]})

    code: str = Field(description="the query's binary code, hex (packed bytes, most significant bit first)")
    k: int
    count: int = Field(description="number of hits (fewer than k when the index is small or max_distance cuts)")
    hits: list[Hit] = Field(description="nearest first; ties in insertion order")
    timings: Timings


class SimilarResponse(BaseModel):
    id: str = Field(description="the indexed item searched from (not among the hits)")
    code: str
    k: int
    count: int
    hits: list[Hit]


class ItemResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg", "code": "9c3e51f0a2b4d867",
        "metadata": _GOLDEN}]})

    id: str
    code: str = Field(description="the item's binary code, hex")
    metadata: dict[str, Any]


class DeleteResponse(BaseModel):
    id: str
    deleted: bool


class IndexEntry(BaseModel):
    """One element of the `items` form field: the id and metadata of the image file at the same position."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, examples=["sku-1042"])
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     examples=[{"name": "Granny Smith", "price": 0.45,
                                                "image": "https://shop.example/img/1042.jpg"}])


class ItemResult(BaseModel):
    id: str
    status: Literal["indexed", "rejected"]
    reason: str | None = Field(None, description="why the item was rejected")


class IndexResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "indexed": 1, "rejected": 1,
        "results": [{"id": "sku-1042", "status": "indexed", "reason": None},
                    {"id": "sku-1043", "status": "rejected",
                     "reason": "the image is truncated or corrupt: image file is truncated"}]}]})

    indexed: int
    rejected: int
    results: list[ItemResult] = Field(description="one per uploaded image, in upload order")


class JobAccepted(BaseModel):
    job_id: str
    state: str
    total: int
    status_url: str = Field(examples=["/jobs/0f8e4b3c9a7d4e21b6c5a4f3e2d1c0b9"])


class JobStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "0f8e4b3c9a7d4e21b6c5a4f3e2d1c0b9", "state": "running", "total": 500, "done": 128, "failed": 1,
        "indexed": 127, "attempts": 1, "error": None, "created_at": 1764072000.5, "updated_at": 1764072031.2,
        "rejected": [{"id": "sku-77", "reason": "the image file is empty"}]}]})

    id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    total: int
    done: int = Field(description="items processed so far (indexed or rejected)")
    failed: int = Field(description="items rejected so far")
    indexed: int = Field(description="items in the index (searchable) so far")
    attempts: int = Field(description="1, plus one per resumption after an interrupted run")
    error: str | None = Field(description="why the job failed, when it did")
    created_at: float
    updated_at: float
    rejected: list[ItemResult]


class IndexingProgress(BaseModel):
    state: Literal["pending", "running", "done", "failed"]
    total: int
    done: int
    failed: int
    error: str | None


class Stats(BaseModel):
    count: int = Field(description="items in the index")
    bits: int
    model_fingerprint: str
    index_store: str
    device: str
    checkpoint: str
    queue: dict[str, int] = Field(description="images admitted now, and the queue's capacity")
    sample_catalogue: IndexingProgress | None


class Ready(BaseModel):
    ready: bool
    checks: dict[str, bool]
    reasons: list[str] = Field(description="what is not ready yet, for people")
    sample_catalogue: IndexingProgress | None = None

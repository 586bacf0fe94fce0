"""How routes document their error responses in OpenAPI: all with the one JSON error body."""
from __future__ import annotations

from typing import Any

from service.schemas import ErrorBody

_WHY = {
    400: "the upload or a field is malformed (empty, truncated or corrupt image, bad multipart)",
    401: "X-API-Key is missing or wrong",
    404: "no such item or job",
    413: "the request, the image file or its pixel count is over its limit",
    415: "not multipart/form-data, or not an accepted image format",
    422: "a field is missing or invalid; `errors` names it",
    503: "the encoder queue is full: retry after the Retry-After header's seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in statuses}


def document_max_k(spec: dict[str, Any], max_k: int) -> None:
    """Put k's ceiling in the document: it is a setting (DEEPHASH_MAX_K), which the Query
    declaration cannot know, and clients (and fuzzers) should not have to guess it."""
    for operation in (op for path in spec["paths"].values() for op in path.values()):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] == "k":
                parameter["schema"]["maximum"] = max_k

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

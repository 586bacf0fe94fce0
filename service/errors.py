"""One JSON error shape for every failure: {"error": code, "detail": message, "request_id": ...}.

Validation errors add "errors", one entry per offending field, so a client
always learns which field was wrong.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import RedisError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from index import StoreError
from service.logs import current_request_id

log = logging.getLogger(__name__)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class ApiError(Exception):
    """A failure the client can act on: HTTP status, a stable code and a message naming the problem."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


class Overloaded(ApiError):
    """The encode queue is full; the client should come back after Retry-After seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(503, "overloaded", "the encoder queue is full; retry shortly",
                         headers={"Retry-After": str(retry_after_s)})


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    request_id = current_request_id()
    body = {"error": code, "detail": detail, **extra, "request_id": request_id}
    # Set here too: an unexpected error's response is sent outside the request-id middleware.
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "X-Request-ID": request_id or ""})


def _field_name(loc: tuple) -> str:
    # ("query", "k") -> "k"; ("body", "items", 3, "id") -> "items.3.id"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [{"field": _field_name(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
              for e in exc.errors()]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(422, "invalid_request", summary, errors=fields)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return error_response(404, "not_found", f"no route {request.method} {request.url.path}")
    if exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; allowed: {allowed}",
                              {"Allow": allowed})
    return error_response(exc.status_code, _code_for(exc.status_code), str(exc.detail), exc.headers)


def _allowed_methods(request: Request) -> str:
    """The methods some route serves at this path.  Starlette's 405 names only the first matching
    route's, and GET /items/{id} and DELETE /items/{id} are two routes.  Mounts (static files) answer
    every method themselves, so they are left to their own Allow."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    return ", ".join(method for method in _METHODS
                     if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes))


def _code_for(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 413: "request_too_large",
            415: "unsupported_media_type"}.get(status, f"http_{status}")


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "store_unavailable", f"the index or job store is unavailable: {exc}")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for outage in (StoreError, RedisError):
        app.add_exception_handler(outage, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)

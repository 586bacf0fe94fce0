"""ASGI middleware: request context (id, log line, metrics) and request body limits."""
from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.logs import set_request_id
from service.metrics import Metrics

log = logging.getLogger("service.access")

# Polled by orchestrators and scrapers every few seconds: logged only at DEBUG.
_PROBES = {"/health", "/ready", "/metrics"}

# A client's id is echoed into logs and headers, so only tame ones are kept.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """A request id (X-Request-ID honoured or made) for logs and the response, one JSON log line, HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex
        # Each request runs in its own task, so this value ends with the request (and is still
        # set when Starlette's outermost error handler renders an unexpected error).
        set_request_id(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_seconds.labels(scope["method"], route).observe(seconds)
            fields = {"method": scope["method"], "path": scope["path"], "route": route, "status": status,
                      "duration_ms": round(seconds * 1e3, 2)}
            log.log(logging.DEBUG if route in _PROBES else logging.INFO, "%s %s %d", scope["method"],
                    scope["path"], status, extra=fields)


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through to the error handlers."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this endpoint's limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse oversize bodies while they stream in, not after: a declared Content-Length over the
    limit is refused before a byte is read, and bodies without one are counted as they arrive."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int) -> None:
        self.app = app
        self.limits = limits
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(413, "request_too_large", BodyTooLarge(limit).detail)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)

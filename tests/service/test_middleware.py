"""Error handlers and middleware on a bare app: even unexpected failures answer in the one JSON shape."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from index import StoreError
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, RequestContextMiddleware


def bare_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limits={"/upload": 1000}, default=10)
    app.add_middleware(RequestContextMiddleware, metrics=Metrics())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/outage")
    async def outage() -> None:
        raise StoreError("Redis at redis://x: appending to the log failed")

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        return {"size": len(await request.body())}

    return app


def test_an_unexpected_error_is_a_logged_json_500(caplog):
    with TestClient(bare_app(), raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "an unexpected error occurred; it has been logged",
                               "request_id": "trace-1"}
    assert response.headers["x-request-id"] == "trace-1"
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_store_outage_is_a_503():
    with TestClient(bare_app()) as client:
        response = client.get("/outage")
    assert response.status_code == 503 and response.json()["error"] == "store_unavailable"
    assert "appending to the log failed" in response.json()["detail"]


def test_body_limits_per_path():
    with TestClient(bare_app()) as client:
        assert client.post("/upload", content=b"x" * 1000).json() == {"size": 1000}
        refused = client.post("/upload", content=b"x" * 1001)
        assert refused.status_code == 413 and "limit of 1000 bytes" in refused.json()["detail"]
        streamed = client.post("/upload", content=iter([b"x" * 600, b"x" * 600]))  # no Content-Length
        assert streamed.status_code == 413 and streamed.json()["error"] == "request_too_large"
        assert client.post("/elsewhere", content=b"x" * 11).status_code == 413

"""The FastAPI application: lifespan-loaded resources, routers per resource, the search page."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.catalogue import CATALOGUE_URL, catalogue_root, read_catalogue
from service.deps import AppState
from service.errors import install_error_handlers
from service.indexing import Progress, index_catalogue
from service.jobs import open_job_store
from service.jobs.runner import JobRunner
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.resources import IndexMismatch, Resources, open_resources
from service.routes import items, jobs, ops, search
from service.routes.openapi import document_max_k
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).parent / "ui"
DOCS_ASSETS = "/docs-assets"
# Multipart boundaries and part headers around one uploaded image.
MULTIPART_OVERHEAD = 64 * 1024
# Bodies of routes that take no upload (none of them reads one).
DEFAULT_MAX_BODY = 64 * 1024
# The page loads only its own files; thumbnails may come from the catalogue's image URLs anywhere,
# and the query's preview from a blob: URL.
UI_POLICY = ("default-src 'self'; img-src 'self' blob: data: http: https:; object-src 'none'; "
             "base-uri 'none'; frame-ancestors 'none'")


async def _index_sample_catalogue(resources: Resources, source: Path, progress: Progress) -> None:
    started = time.perf_counter()
    try:
        catalogue = await asyncio.to_thread(read_catalogue, source, CATALOGUE_URL)
        await index_catalogue(resources, catalogue, progress, skip_present=True)
    except Exception as exc:  # noqa: BLE001 - reported by /ready; the service still serves what it has
        progress.state, progress.error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("indexing the sample catalogue failed")
        return
    log.info("sample catalogue indexed", extra={"source": str(source), "encoded": progress.done - progress.failed,
                                                "rejected": progress.failed, "items": len(resources.index),
                                                "seconds": round(time.perf_counter() - started, 1)})


def _sample_catalogue(settings: Settings) -> Path | None:
    source = settings.sample_catalogue_path
    if source is not None and not source.exists():
        log.warning("sample catalogue not found; serving without it",
                    extra={"source": str(source), "hint": "set DEEPHASH_DATA_DIR, or DEEPHASH_SAMPLE_CATALOGUE="})
        return None
    return source


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    async with AsyncExitStack() as stack:
        try:
            resources = await stack.enter_async_context(open_resources(settings, metrics))
        except IndexMismatch as exc:
            log.error("refusing to serve: %s", exc)
            raise
        runner = JobRunner(open_job_store(settings), resources)
        await runner.start()
        source: Path | None = app.state.sample_catalogue
        progress = Progress() if source else None
        # In the background: /health answers at once, /ready once the catalogue is in.
        loader = asyncio.create_task(_index_sample_catalogue(resources, source, progress)) if source else None
        metrics.watch("deephash_index_items", "Items in the index", lambda: len(resources.index))
        metrics.watch("deephash_queue_admitted", "Images admitted for decode and encode",
                      lambda: resources.pipeline.batcher.admitted)
        app.state.service = AppState(settings, resources, runner, progress)
        log.info("service ready to accept requests", extra={"host": settings.host, "port": settings.port})
        try:
            yield
        finally:
            if loader is not None:
                loader.cancel()
                await asyncio.gather(loader, return_exceptions=True)
            await runner.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment); resources load when it starts."""
    settings = settings or get_settings()
    app = FastAPI(title="deephash", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Image retrieval by deep hashing: upload an image, get the catalogue items whose "
                              "binary codes are nearest in Hamming distance.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, default=DEFAULT_MAX_BODY,
                       limits={"/search": settings.max_upload_bytes + MULTIPART_OVERHEAD,
                               "/index": settings.max_index_bytes})
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)  # outermost: sees every response
    # search first: its /items/{id}/similar must be matched before items' /items/{id}.
    app.include_router(search.router)
    app.include_router(items.router,
                       form_limits={"max_files": settings.max_index_items, "max_part_size": settings.max_index_bytes})
    app.include_router(jobs.router)
    app.include_router(ops.router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", headers={"Content-Security-Policy": UI_POLICY})

    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # Swagger UI from its PyPI package, not a CDN: the docs work on a closed network too
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="deephash API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url="data:,")

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.state.sample_catalogue = _sample_catalogue(settings)
    if app.state.sample_catalogue is not None:
        app.mount(CATALOGUE_URL.rstrip("/"), StaticFiles(directory=catalogue_root(app.state.sample_catalogue)),
                  name="catalogue")
    document_max_k(app.openapi(), settings.max_k)  # the document is built once, here, with every route in
    return app

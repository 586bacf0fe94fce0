"""`deephash` (or `python -m service`): serve the API, or work on the index directly.

Every command but `serve` opens the encoder and the index in-process, with
the same wiring as the app (settings from DEEPHASH_* variables), not over
HTTP.  The embedded index is locked by the process that has it open: stop
the server before `index`, `reindex` or `search` on it (or send images to
the running server's POST /index).  A Redis index can be written by the CLI
while servers run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from index import StoreError
from service.catalogue import CATALOGUE_URL, read_catalogue
from service.indexing import ItemResult, Progress, index_catalogue
from service.jobs.local import JobsDirLocked
from service.logs import log_config
from service.resources import IndexMismatch, open_resources
from service.settings import Settings


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = settings.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port)) if v})
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_config=log_config(settings.log_level), access_log=False)
    return 0


def _print_progress(results: list[ItemResult], progress: Progress) -> None:
    for result in results:
        if result.status == "rejected":
            print(f"rejected {result.id}: {result.reason}", file=sys.stderr)
    print(f"{progress.done}/{progress.total} images", file=sys.stderr)


async def _index(settings: Settings, source: Path, image_url_prefix: str | None, skip_present: bool) -> int:
    items = read_catalogue(source, image_url_prefix)
    async with open_resources(settings) as res:
        progress = await index_catalogue(res, items, Progress(), skip_present=skip_present,
                                         on_chunk=_print_progress)
        print(json.dumps({"source": str(source), **progress.as_dict(), "items_in_index": len(res.index)}))
    return 1 if progress.failed else 0


def index(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_index(settings, Path(args.source), args.image_url_prefix, args.skip_present))


async def _search(settings: Settings, image: Path, k: int, max_distance: int | None) -> int:
    async with open_resources(settings) as res:
        encoded = await res.pipeline.encode([image])
        if encoded.errors[0] is not None:
            print(f"deephash: {image}: {encoded.errors[0].detail}", file=sys.stderr)
            return 1
        code = encoded.codes[0]
        hits = res.index.search(code[None, :], k, max_distance).hits(0)
    print(json.dumps({"code": code.tobytes().hex(), "hits": [
        {"id": h.id, "distance": h.distance, "metadata": h.metadata} for h in hits]}, indent=2, ensure_ascii=False))
    return 0


def search(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_search(settings, Path(args.image), args.k, args.max_distance))


def stats(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict:
        async with open_resources(settings) as res:
            return {**res.index.stats(), "model_fingerprint": res.encoder.fingerprint, "device": res.encoder.device}

    print(json.dumps(asyncio.run(run()), indent=2))
    return 0


def drop_index(settings: Settings) -> str:
    """Delete the index (not the jobs); returns what was deleted."""
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        jobs_prefix = f"{settings.redis_namespace}:jobs:".encode()
        keys = [k for k in client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000)
                if not k.startswith(jobs_prefix)]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start: start + 1000])
        return f"{len(keys)} keys of Redis namespace {settings.redis_namespace!r}"
    path = settings.index_path
    if not path.exists():
        return f"nothing (no index at {path})"
    if not (path / "manifest.json").exists():
        raise FileExistsError(f"{path} does not look like an index directory (no manifest.json); not deleting it")
    shutil.rmtree(path)
    return f"directory {path}"


def reindex(settings: Settings, args: argparse.Namespace) -> int:
    source = Path(args.source) if args.source else settings.sample_catalogue_path
    if source is None:
        print("deephash: no source given and DEEPHASH_SAMPLE_CATALOGUE is empty", file=sys.stderr)
        return 2
    where = (f"Redis namespace {settings.redis_namespace!r}" if settings.redis_url else str(settings.index_path))
    if not args.yes:
        print(f"this deletes the index in {where} and indexes {source} with {settings.checkpoint}; "
              "run again with --yes to do it (stop the servers using it first)", file=sys.stderr)
        return 1
    print(f"deleted {drop_index(settings)}", file=sys.stderr)
    prefix = CATALOGUE_URL if source == settings.sample_catalogue_path else args.image_url_prefix
    return asyncio.run(_index(settings, source, prefix, skip_present=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deephash", description=__doc__.split("\n\n")[0],
                                     epilog="Settings come from DEEPHASH_* environment variables (see the README).")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Settings, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    sub = command("serve", serve, "run the HTTP service (indexes the sample catalogue on first start)")
    sub.add_argument("--host", help="overrides DEEPHASH_HOST")
    sub.add_argument("--port", type=int, help="overrides DEEPHASH_PORT")

    url_help = "store metadata['image'] = PREFIX + relative path, for thumbnails (e.g. https://cdn.example/shop/)"
    sub = command("index", index, "index images from a folder or a list file (ids: relative paths); upsert")
    sub.add_argument("source", help="folder of images, or list file of 'path[, label[, coarse label]]' lines")
    sub.add_argument("--image-url-prefix", metavar="PREFIX", help=url_help)
    sub.add_argument("--skip-present", action="store_true", help="do not re-encode ids already in the index")

    sub = command("search", search, "print the nearest neighbours of an image file")
    sub.add_argument("image")
    sub.add_argument("-k", type=int, default=10)
    sub.add_argument("--max-distance", type=int)

    command("stats", stats, "print index statistics and the model serving it")

    sub = command("reindex", reindex, "delete the index and rebuild it with the current checkpoint "
                                      "(after a model change)")
    sub.add_argument("source", nargs="?", help="folder or list file (default: the sample catalogue)")
    sub.add_argument("--image-url-prefix", metavar="PREFIX", help=url_help)
    sub.add_argument("--yes", action="store_true", help="really delete the current index")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.exit(f"deephash: invalid DEEPHASH_* settings:\n{exc}")
    logging.config.dictConfig(log_config(settings.log_level))
    try:
        sys.exit(args.run(settings, args))
    except (IndexMismatch, StoreError, JobsDirLocked, FileNotFoundError, FileExistsError, ValueError) as exc:
        sys.exit(f"deephash: {exc}")

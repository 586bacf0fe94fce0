"""The encoder, the index and the encode pipeline, wired the same way for the app and the CLI."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from index import FingerprintMismatch, HammingIndex, open_store
from index.stores import Store
from service.batching import Batcher
from service.images import configure_pillow
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import Settings

if TYPE_CHECKING:
    import torch

    from model.encoder import Encoder

log = logging.getLogger(__name__)


class IndexMismatch(RuntimeError):
    """The index holds codes of another model: serving it would return nonsense."""


@dataclass
class Resources:
    settings: Settings
    encoder: Encoder
    index: HammingIndex
    pipeline: Pipeline
    metrics: Metrics


def open_index_store(settings: Settings) -> Store:
    if settings.redis_url:
        return open_store(settings.redis_url, namespace=settings.redis_namespace)
    return open_store(settings.index_path)


def reindex_hint(settings: Settings) -> str:
    where = ("DEEPHASH_REDIS_NAMESPACE to a new namespace" if settings.redis_url
             else "DEEPHASH_INDEX_PATH to a new directory")
    return f"run `deephash reindex --yes` to rebuild it with this model, or set {where}"


def open_index(settings: Settings, encoder: Encoder) -> HammingIndex:
    """The index for this encoder's codes; IndexMismatch if it holds another model's."""
    store = open_index_store(settings)
    try:
        return HammingIndex(encoder.bits, encoder.fingerprint, store=store)
    except FingerprintMismatch as exc:
        store.close()
        raise IndexMismatch(f"the index at {store.location} was built by another model than the checkpoint "
                            f"{settings.checkpoint} (fingerprint {encoder.fingerprint}, {encoder.bits} bits): "
                            f"{exc}. {reindex_hint(settings)}") from None
    except BaseException:
        store.close()
        raise


def load_encoder(settings: Settings) -> Encoder:
    # Imported here: torch takes seconds to import, and `deephash --help` needs none of it.
    from model.encoder import Encoder

    return Encoder.from_checkpoint(settings.checkpoint, device=settings.device)


@asynccontextmanager
async def open_resources(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Resources]:
    """Load the encoder, open the index and start the batcher; undo all three on exit."""
    metrics = metrics or Metrics()
    configure_pillow(settings.max_image_pixels)
    encoder = await asyncio.to_thread(load_encoder, settings)
    log.info("encoder loaded", extra={"checkpoint": str(settings.checkpoint), "fingerprint": encoder.fingerprint,
                                      "bits": encoder.bits, "device": encoder.device})
    index = await asyncio.to_thread(open_index, settings, encoder)
    log.info("index open", extra={"store": index.store.location, "count": len(index)})

    def encode(tensors: list[torch.Tensor]) -> np.ndarray:
        import torch

        return encoder.encode_tensors(torch.stack(tensors))

    batcher = Batcher(encode, max_batch=settings.batch_size, max_wait_s=settings.batch_wait_ms / 1000,
                      capacity=settings.queue_size, retry_after_s=settings.retry_after_s,
                      on_batch=metrics.observe_batch, on_overload=metrics.overloaded.inc)
    batcher.start()
    pipeline = Pipeline(encoder, batcher, decode_threads=settings.decode_threads,
                        max_upload_bytes=settings.max_upload_bytes, max_image_pixels=settings.max_image_pixels,
                        metrics=metrics)
    try:
        yield Resources(settings, encoder, index, pipeline, metrics)
    finally:
        await batcher.stop()
        await pipeline.close()
        await asyncio.to_thread(close_index, index)


def close_index(index: HammingIndex) -> None:
    """A local index writes a snapshot on the way out, so the next start loads it instead of replaying
    the log; replicas on Redis leave snapshots to the writes that make the log long."""
    try:
        if not index.store.shared:
            index.checkpoint()
    finally:
        index.close()

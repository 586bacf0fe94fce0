"""Image bytes to packed codes: safe decoding and preprocessing in a thread pool, then the batched encoder."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.batching import Batcher
from service.images import ImageRejected, decode_image
from service.metrics import Metrics

if TYPE_CHECKING:
    import torch

    from model.encoder import Encoder

Source = bytes | Path  # an upload's bytes, or a catalogue file on disk


@dataclass(frozen=True)
class Encoded:
    """Per source, its packed code or why it was refused; wall times of the two stages."""

    codes: list[np.ndarray | None]
    errors: list[ImageRejected | None]
    decode_s: float
    encode_s: float


class Pipeline:
    def __init__(self, encoder: Encoder, batcher: Batcher, *, decode_threads: int, max_upload_bytes: int,
                 max_image_pixels: int, metrics: Metrics) -> None:
        self.encoder = encoder
        self.batcher = batcher
        self._max_bytes = max_upload_bytes
        self._max_pixels = max_image_pixels
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown)

    async def encode(self, sources: Sequence[Source], *, wait: bool = False) -> Encoded:
        """Decode and encode sources; with `wait`, queue for room instead of failing with Overloaded."""
        loop = asyncio.get_running_loop()
        async with self.batcher.admission(len(sources), wait=wait):
            started = time.perf_counter()
            prepared = await asyncio.gather(*(loop.run_in_executor(self._pool, self._prepare, s) for s in sources))
            decoded = time.perf_counter()
            tensors = [p for p in prepared if not isinstance(p, ImageRejected)]
            rows = iter(await self.batcher.submit(tensors) if tensors else [])
            encoded = time.perf_counter()
        self._metrics.stage_seconds.labels("decode").observe(decoded - started)
        if tensors:
            self._metrics.stage_seconds.labels("encode").observe(encoded - decoded)
        errors = [p if isinstance(p, ImageRejected) else None for p in prepared]
        for error in filter(None, errors):
            self._metrics.images_rejected.labels(error.code).inc()
        codes = [None if error else next(rows) for error in errors]
        return Encoded(codes, errors, decoded - started, encoded - decoded)

    def _prepare(self, source: Source) -> torch.Tensor | ImageRejected:
        """Runs in the decode pool; a refusal is returned, not raised, so one bad image spoils nothing else."""
        try:
            if isinstance(source, Path):
                try:
                    source = source.read_bytes()
                except OSError as exc:
                    raise ImageRejected(400, "unreadable_file", f"cannot read {source}: {exc.strerror}") from None
            return self.encoder.preprocess_image(decode_image(source, self._max_bytes, self._max_pixels))
        except ImageRejected as rejected:
            return rejected

"""Dynamic batching: concurrent requests share one encoder call.

Items wait in a queue; a batch runs as soon as it is full or `max_wait_s`
after its first item arrived, whichever comes first, or at once when every
admitted item is already in it: with nothing on its way (being decoded),
waiting would only add latency.  The model runs in one dedicated worker
thread, so inference never blocks the event loop and never runs twice at
once.  The queue is bounded by admission: callers reserve room for their
items first and are refused at once (Overloaded) when there is none, rather
than waiting in an unbounded line.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import numpy as np

from service.errors import Overloaded

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    """Runs `encode(items) -> array with one row per item` on batches of queued items."""

    def __init__(self, encode: Callable[[list[Item]], np.ndarray], *, max_batch: int, max_wait_s: float,
                 capacity: int, retry_after_s: int = 1,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None,
                 on_overload: Callable[[], None] = lambda: None) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_overload = on_overload
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] = asyncio.Queue()
        self._admitted = 0
        self._room = asyncio.Condition()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._runner: asyncio.Task | None = None

    @property
    def admitted(self) -> int:
        """Items admitted and not yet finished (decoding, queued or encoding)."""
        return self._admitted

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        await asyncio.to_thread(self._executor.shutdown)  # lets a running batch finish

    @asynccontextmanager
    async def admission(self, n: int, *, wait: bool = False) -> AsyncIterator[None]:
        """Reserve room for n items; refuse with Overloaded when full, or wait for room if `wait`."""
        if n > self.capacity:
            raise ValueError(f"{n} items can never fit a queue of {self.capacity}")
        async with self._room:
            if wait:
                await self._room.wait_for(lambda: self._admitted + n <= self.capacity)
            elif self._admitted + n > self.capacity:
                self._on_overload()
                raise Overloaded(self._retry_after_s)
            self._admitted += n
        try:
            yield
        finally:
            async with self._room:
                self._admitted -= n
                self._room.notify_all()

    async def submit(self, items: Sequence[Item]) -> np.ndarray:
        """Encode a non-empty list of items (in whatever batches form); one row per item, in order."""
        if self._runner is None or self._runner.done():
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        return np.stack(await asyncio.gather(*futures))

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            if self._admitted <= len(batch):  # nothing admitted is on its way to the queue
                break
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, future) for item, future in batch if not future.cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = loop.time()
            try:
                rows = await loop.run_in_executor(self._executor, self._encode, [item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:  # stopped mid-batch: nobody may wait for it forever
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - the callers get the error, the loop goes on
                log.exception("encoding a batch of %d failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._on_batch(len(batch), loop.time() - started)
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)

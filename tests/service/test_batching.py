"""The dynamic batcher on its own: batch formation, the bounded queue, errors reaching every caller."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher
from service.errors import Overloaded


class Recorder:
    """An 'encoder' that records its batches and the thread it ran on; each item's code is itself."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail = fail

    def __call__(self, items: list[int]) -> np.ndarray:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model broke")
        return np.asarray(items, dtype=np.uint8)[:, None]


def run(coroutine):
    return asyncio.run(coroutine)


async def started(encode: Recorder, **options) -> Batcher[int]:
    batcher = Batcher(encode, **{"max_batch": 4, "max_wait_s": 0.05, "capacity": 16, **options})
    batcher.start()
    return batcher


def test_concurrent_requests_share_batches_on_one_worker_thread():
    async def scenario():
        encode = Recorder()
        batcher = await started(encode)

        async def one(item: int) -> int:
            async with batcher.admission(1):
                return int((await batcher.submit([item]))[0, 0])

        results = await asyncio.gather(*(one(i) for i in range(10)))
        await batcher.stop()
        return results, encode

    results, encode = run(scenario())
    assert results == list(range(10))
    assert [len(b) for b in encode.batches] == [4, 4, 2]
    assert sorted(i for b in encode.batches for i in b) == list(range(10))
    assert len(encode.threads) == 1 and encode.threads.pop().startswith("encode")


def test_a_batch_waits_at_most_max_wait_for_admitted_items_that_never_come():
    async def scenario():
        batcher = await started(Recorder(), max_wait_s=0.02)
        begin = time.perf_counter()
        async with batcher.admission(2):  # room for two, but only one is ever submitted
            await batcher.submit([7])
        elapsed = time.perf_counter() - begin
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 0.5


def test_a_full_queue_refuses_at_once_and_frees_room_after():
    async def scenario():
        batcher = await started(Recorder(delay=0.2), capacity=3)
        async with batcher.admission(3):
            running = asyncio.create_task(batcher.submit([1, 2, 3]))
            begin = time.perf_counter()
            with pytest.raises(Overloaded) as refused:
                async with batcher.admission(1):
                    pass
            assert time.perf_counter() - begin < 0.05
            assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
            await running
        async with batcher.admission(3):  # room again once the first caller left
            pass
        await batcher.stop()

    run(scenario())


def test_waiting_admission_queues_for_room():
    async def scenario():
        batcher = await started(Recorder(), capacity=2)
        order = []

        async def holder():
            async with batcher.admission(2):
                await asyncio.sleep(0.1)
                order.append("holder done")

        async def waiter():
            await asyncio.sleep(0.01)
            async with batcher.admission(2, wait=True):
                order.append("waiter admitted")

        await asyncio.gather(holder(), waiter())
        await batcher.stop()
        return order

    assert run(scenario()) == ["holder done", "waiter admitted"]


def test_an_encoder_error_reaches_every_caller_and_the_batcher_goes_on():
    async def scenario():
        encode = Recorder(fail=True)
        batcher = await started(encode)
        outcomes = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
        encode.fail = False
        after = await batcher.submit([3])
        await batcher.stop()
        return outcomes, after

    outcomes, after = run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert after.tolist() == [[3]]


def test_more_than_the_queue_can_ever_hold_is_a_programming_error():
    async def scenario():
        batcher = await started(Recorder(), capacity=2)
        with pytest.raises(ValueError):
            async with batcher.admission(3, wait=True):
                pass
        await batcher.stop()

    run(scenario())


def test_stopping_mid_batch_leaves_no_caller_waiting():
    async def scenario():
        batcher = await started(Recorder(delay=0.3))
        waiting = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.1)  # the batch is running now
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 1)

    [outcome] = run(scenario())
    assert isinstance(outcome, asyncio.CancelledError)


def test_a_lone_request_does_not_wait_for_company():
    """With nothing else admitted, the batch runs at once instead of after max_wait_s."""
    async def scenario():
        batcher = await started(Recorder(), max_wait_s=5.0)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        async with batcher.admission(1):
            await batcher.submit([7])
        waited = loop.time() - begun
        await batcher.stop()
        return waited

    assert run(scenario()) < 2.5  # far below the 5 s deadline it would otherwise wait out


def test_an_admitted_item_still_decoding_is_waited_for():
    """An item admitted but not yet queued (its image still decoding) joins the batch before it runs."""
    async def scenario():
        encode = Recorder()
        batcher = await started(encode, max_wait_s=5.0)

        async def late() -> None:
            async with batcher.admission(1):
                await asyncio.sleep(0.1)  # "decoding"
                await batcher.submit([2])

        async def early() -> None:
            async with batcher.admission(1):
                await batcher.submit([1])

        await asyncio.gather(late(), early())  # late() is admitted first, then sleeps
        await batcher.stop()
        return encode.batches

    assert run(scenario()) == [[1, 2]]

"""SIGKILL in the middle of a large indexing job, with synchronous writes going on beside it.

tests/service/test_jobs.py checks the job's resumption and that its done
items were on disk (by opening the index directly).  Here the claim is the
client's: every item the server acknowledged before the kill (a 200 of a
synchronous POST /index, or a job's reported progress) is found through the
API after the restart, by GET and by searching with its own image; the job
ends resumed or failed, never stuck; no half-written job folder is left;
and the item count is exactly the items that can be read back.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import CLASSES
from tests.service.servers import (
    API_KEY,
    AUTH,
    GroceryImage,
    Server,
    files,
    grocery_images,
    poll_job,
)

JOB_ITEMS = 32
SLOW_JOBS = {"DEEPHASH_ASYNC_INDEX_THRESHOLD": "4", "DEEPHASH_BATCH_SIZE": "2", "DEEPHASH_QUEUE_SIZE": "8",
             "DEEPHASH_API_KEY": API_KEY}
KILL_AFTER_DONE = 8


class SyncWriter(threading.Thread):
    """POSTs one image at a time to /index until stopped or the server is gone; remembers what was acknowledged."""

    def __init__(self, url: str, images: list[GroceryImage]) -> None:
        super().__init__(daemon=True)
        self.url, self.images = url, images
        self.acknowledged: list[GroceryImage] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for image in self.images:
                if self.stop.is_set():
                    return
                try:
                    response = client.post("/index", headers=AUTH,
                                           files=files([(image.path.name, image.path.read_bytes())]),
                                           data={"items": json.dumps([{"id": f"sync/{image.id}"}])})
                except httpx.TransportError:
                    return  # killed
                if response.status_code == 200 and response.json()["indexed"] == 1:
                    self.acknowledged.append(image)


def searchable(server: Server, item_id: str, image: GroceryImage) -> bool:
    """The item reads back, and a search with its image finds it at distance 0."""
    if server.client.get(f"/items/{item_id}").status_code != 200:
        return False
    hits = server.client.post("/search", params={"k": 10},
                              files=files([(image.path.name, image.path.read_bytes())], "image")).json()["hits"]
    return any(h["id"] == item_id and h["distance"] == 0 for h in hits)


@pytest.mark.slow
def test_sigkill_mid_job_loses_nothing_acknowledged(make_server, tmp_path: Path, shared_data: Path):
    images = grocery_images(shared_data, "test", CLASSES, 12)
    job_images, sync_images = images[:JOB_ITEMS], images[JOB_ITEMS:]
    first = make_server(**SLOW_JOBS)
    job_ids = [f"job/{image.id}" for image in job_images]
    accepted = first.client.post("/index", headers=AUTH,
                                 files=files([(i.path.name, i.path.read_bytes()) for i in job_images]),
                                 data={"items": json.dumps([{"id": item_id} for item_id in job_ids])})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()["job_id"]
    writer = SyncWriter(first.url, sync_images)
    writer.start()
    while (status := first.client.get(f"/jobs/{job}").json())["done"] < KILL_AFTER_DONE:
        time.sleep(0.02)
    first.stop(signal.SIGKILL)
    writer.join(timeout=30)
    assert status["done"] < JOB_ITEMS, "the job ended before the kill; nothing was tested"
    assert writer.acknowledged, "no synchronous write was acknowledged before the kill"

    second = make_server(**SLOW_JOBS)
    acknowledged = [(f"sync/{i.id}", i) for i in writer.acknowledged] + list(zip(job_ids, job_images))[: status["done"]]
    lost = [item_id for item_id, image in acknowledged if not searchable(second, item_id, image)]
    assert lost == [], f"acknowledged before the kill, not searchable after it: {lost}"

    final = poll_job(second.client, job)
    assert (final["state"], final["attempts"]) in {("succeeded", 2), ("failed", 2)}, final
    assert final["state"] == "failed" or final["done"] == final["indexed"] == JOB_ITEMS, final
    assert list((tmp_path / "jobs").glob("*.tmp")) == [], "a half-written job folder was left behind"
    present = [item_id for item_id in job_ids + [f"sync/{i.id}" for i in sync_images]
               if second.client.get(f"/items/{item_id}").status_code == 200]
    assert second.client.get("/stats").json()["count"] == len(present)
    print(f"\nkilled at job progress {status['done']}/{JOB_ITEMS} with {len(writer.acknowledged)} synchronous "
          f"writes acknowledged: all {len(acknowledged)} acknowledged items found after the restart; "
          f"job {final['state']} after {final['attempts']} attempts")

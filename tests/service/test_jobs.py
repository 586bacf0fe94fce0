"""A crash mid-job: acknowledged items stay searchable, the restart resumes the job and encodes
nothing it already has (the sample catalogue included)."""
from __future__ import annotations

import json
import signal
import time

from index import HammingIndex, open_store
from tests.service.servers import AUTH, copy_images, files, grocery_images, poll_job

N_ITEMS = 24
BAD = {1: b"not an image at all", 20: b"\xff\xd8\xff\xe0 truncated"}  # rejected before and after the kill
SMALL_JOBS = {"DEEPHASH_ASYNC_INDEX_THRESHOLD": "4", "DEEPHASH_BATCH_SIZE": "2", "DEEPHASH_QUEUE_SIZE": "8",
              "DEEPHASH_API_KEY": "test-key"}


def submit_job(server, images) -> str:
    uploads = [BAD.get(n) or images[n % len(images)].path.read_bytes() for n in range(N_ITEMS)]
    items = [{"id": f"job-item-{n:02d}", "metadata": {"n": n}} for n in range(N_ITEMS)]
    response = server.client.post("/index", headers=AUTH, data={"items": json.dumps(items)},
                                  files=files([(f"{n}.jpg", data) for n, data in enumerate(uploads)]))
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_restart_after_a_crash_resumes_the_job_and_encodes_nothing_twice(make_server, tmp_path, shared_data,
                                                                        catalogue_images):
    copy_images(grocery_images(shared_data, "train", ["Lemon", "Zucchini"], 2), tmp_path / "shelf")
    env = {**SMALL_JOBS, "DEEPHASH_DATA_DIR": str(tmp_path), "DEEPHASH_SAMPLE_CATALOGUE": "shelf"}
    first = make_server(start=False, **env)
    first.start(wait_for="/health")  # up at once; the sample catalogue goes in behind it
    first.wait("/ready")
    assert first.client.get("/stats").json()["sample_catalogue"]["done"] == 4

    job_id = submit_job(first, catalogue_images[:8])
    while (status := first.client.get(f"/jobs/{job_id}").json())["done"] < 6:
        assert status["state"] in ("queued", "running"), status
        time.sleep(0.05)
    first.stop(signal.SIGKILL)
    assert status["done"] < N_ITEMS, "the job ended before the kill; nothing was tested"

    # Everything the job acknowledged before the crash is in the index on disk.
    with HammingIndex(store=open_store(tmp_path / "index")) as index:
        acknowledged = [f"job-item-{n:02d}" for n in range(status["done"]) if n not in BAD]
        assert all(item_id in index for item_id in acknowledged)

    second = make_server(**env)
    assert second.client.get("/stats").json()["sample_catalogue"]["total"] == 0, "the restart encoded it again"
    final = poll_job(second.client, job_id)
    assert (final["state"], final["total"], final["done"], final["failed"]) == ("succeeded", N_ITEMS, N_ITEMS, 2)
    assert final["attempts"] == 2
    assert [r["id"] for r in final["rejected"]] == ["job-item-01", "job-item-20"]
    assert second.client.get("/stats").json()["count"] == 4 + N_ITEMS - 2
    assert second.client.get("/items/job-item-23").json()["metadata"] == {"n": 23}

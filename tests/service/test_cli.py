"""The CLI, on the same wiring as the app: the way back from an index built by another model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from index import HammingIndex, open_store
from tests.conftest import REPO_ROOT
from tests.service.servers import clean_environment, copy_images, grocery_images


def deephash(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO_ROOT, env={**clean_environment(), **env},
                          capture_output=True, text=True, timeout=300)


def test_an_index_of_another_model_is_refused_until_reindexed(make_server, tmp_path, checkpoint, shared_data):
    images = grocery_images(shared_data, "test", ["Lime", "Red-Beet"], 2)
    shelf = copy_images(images, tmp_path / "shelf")
    (shelf / "broken.jpg").write_bytes(images[0].path.read_bytes()[:400])
    env = {"DEEPHASH_CHECKPOINT": str(checkpoint), "DEEPHASH_INDEX_PATH": str(tmp_path / "index"),
           "DEEPHASH_JOBS_PATH": str(tmp_path / "jobs"), "DEEPHASH_SAMPLE_CATALOGUE": ""}
    with HammingIndex(64, "another-model", store=open_store(tmp_path / "index")) as other:
        other.upsert(["old"], np.zeros((1, 8), dtype=np.uint8))

    server = make_server(start=False, **env)
    with pytest.raises(RuntimeError, match="server exited") as refused:
        server.start()
    assert "another-model" in str(refused.value) and "deephash reindex --yes" in str(refused.value)

    assert deephash(env, "reindex", str(shelf)).returncode == 1, "reindex must ask for --yes"
    rebuilt = deephash(env, "reindex", str(shelf), "--yes")
    assert rebuilt.returncode == 1, "a rejected file must show in the exit status"
    assert "rejected broken.jpg" in rebuilt.stderr
    summary = json.loads(rebuilt.stdout)
    assert (summary["state"], summary["done"], summary["failed"], summary["items_in_index"]) == ("done", 5, 1, 4)

    found = deephash(env, "search", str(images[0].path), "-k", "2")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["id"] == images[0].id and hits[0]["distance"] == 0
    assert hits[0]["metadata"] == {"name": images[0].path.stem, "category": images[0].name}

"""SIGTERM (what `docker stop` sends) drains the server and leaves the embedded index as a snapshot."""
from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.service.servers import AUTH, files, grocery_images


def test_sigterm_writes_a_snapshot_holding_every_item(make_server, tmp_path: Path, shared_data: Path) -> None:
    server = make_server(DEEPHASH_API_KEY="test-key")
    images = grocery_images(shared_data, "test", ["Lemon"], 3)
    response = server.client.post("/index", files=files([(i.id, i.path.read_bytes()) for i in images]),
                                  headers=AUTH)
    assert response.status_code == 200, response.text
    server.stop(signal.SIGTERM)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["snapshot"] is not None and manifest["snapshot"]["count"] == len(images)
    assert (tmp_path / "index" / manifest["log"]).stat().st_size == 0  # nothing left to replay

"""The API docs page and its assets come from the app itself, so they work without internet access."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_docs_page_loads_swagger_from_the_app_not_a_cdn() -> None:
    client = TestClient(create_app(Settings(sample_catalogue="")))  # no `with`: no lifespan, no model
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assets = [a for a in re.findall(r'(?:src|href)="([^"]*)"', page.text) if not a.startswith("data:")]
    assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert client.get("/openapi.json").json()["info"]["title"] == "deephash"

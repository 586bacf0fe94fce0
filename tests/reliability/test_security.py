"""Security: the API key guards writes (and only when set), nothing loaded from disk is unpickled,
catalogue data reaches the page as text, and no request can make the server open a path of its choosing.

The bad-input corpus (test_bad_input.py) has the refusals: missing and wrong
keys, ids that look like paths, and requests that try to leave the
catalogue's root; here are the checks that need more than one request.
"""
from __future__ import annotations

import ast
import inspect
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from service import deps
from tests.conftest import REPO_ROOT
from tests.reliability.conftest import OUTSIDE_SECRET
from tests.reliability.unsafe_code import scan_source, scan_tree
from tests.service.servers import AUTH, Server, files
from tests.service.test_ui import browser, upload_and_wait

__all__ = ["browser"]  # the search page tests' Chromium fixture

SHIPPED_CODE = ["model", "index", "service", "bench"]


def index_one(server: Server, item_id: str, data: bytes, metadata: dict | None = None, **headers: str):
    return server.client.post("/index", headers=headers, files=files([("x.jpg", data)]),
                              data={"items": json.dumps([{"id": item_id, "metadata": metadata or {}}])})


# ------------------------------------------------------------------ the API key


def test_with_a_key_writes_need_it_and_reads_do_not(guarded: Server, catalogue_images):
    photo = catalogue_images[1].path.read_bytes()
    assert index_one(guarded, "key-guarded", photo).status_code == 401
    assert index_one(guarded, "key-guarded", photo, **AUTH).json()["indexed"] == 1
    client = guarded.client
    assert client.post("/search", files=files([("q.jpg", photo)], "image")).status_code == 200
    assert client.get("/items/key-guarded").status_code == 200
    assert client.get("/items/key-guarded/similar").status_code == 200
    assert client.get("/stats").status_code == 200
    assert client.delete("/items/key-guarded").status_code == 401
    assert client.delete("/items/key-guarded", headers=AUTH).status_code == 200


def test_without_a_key_no_header_is_needed(open_server: Server, catalogue_images):
    photo = catalogue_images[2].path.read_bytes()
    assert index_one(open_server, "open-item", photo).json()["indexed"] == 1
    assert index_one(open_server, "open-item", photo, **{"X-API-Key": "anything"}).json()["indexed"] == 1
    assert open_server.client.delete("/items/open-item").status_code == 200


def test_the_key_is_compared_in_constant_time():
    """require_api_key compares with secrets.compare_digest, and compares nothing else but `is None`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(deps.require_api_key)))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "secrets.compare_digest" in calls
    operators = {type(op) for node in ast.walk(tree) if isinstance(node, ast.Compare) for op in node.ops}
    assert operators <= {ast.Is, ast.IsNot}, f"a comparison that may return early: {operators}"


# ---------------------------------------------------------- nothing unpickled

UNSAFE = ["import pickle", "from joblib import load", "import dill.settings", "torch.load(path)",
          "torch.load(path, weights_only=False)", "np.load(path, allow_pickle=True)",
          "numpy.load(path, allow_pickle=True)", "yaml.load(text)", "yaml.load(text, Loader=yaml.Loader)",
          "yaml.unsafe_load(text)", "eval(text)", "exec(code)", "pd.read_pickle(path)"]
SAFE = ["torch.load(path, map_location='cpu', weights_only=True)", "np.load(path, mmap_mode='r')",
        "yaml.load(text, Loader=yaml.SafeLoader)", "yaml.safe_load(text)", "model.eval()",
        "# no pickle here", "safetensors.torch.load_file(path)"]


@pytest.mark.parametrize("snippet", UNSAFE)
def test_the_scanner_flags_unsafe_loading(snippet: str):
    assert len(scan_source(snippet)) == 1


@pytest.mark.parametrize("snippet", SAFE)
def test_the_scanner_passes_safe_loading(snippet: str):
    assert scan_source(snippet) == []


def test_no_shipped_code_unpickles_or_evaluates():
    assert scan_tree(REPO_ROOT, SHIPPED_CODE) == []


def test_the_default_checkpoint_is_safetensors_and_json():
    assert {p.suffix for p in (REPO_ROOT / "model" / "default").iterdir()} <= {".safetensors", ".json", ".md"}


# ------------------------------------------------------ paths and the catalogue


def test_the_catalogue_serves_its_root_and_nothing_outside_it(guarded: Server, tmp_path_factory):
    client = guarded.client
    shelf = Path(client.get("/stats").json()["index_store"]).parent / "shelf"
    real = next(p for p in sorted(shelf.rglob("*.jpg")) if not p.is_symlink())
    served = client.get(f"/catalogue/{real.relative_to(shelf).as_posix()}")
    assert served.status_code == 200 and served.content == real.read_bytes(), "the mount itself must work"
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(OUTSIDE_SECRET)
    (shelf / "linked-folder").symlink_to(outside, target_is_directory=True)
    for path in ("/catalogue/linked-folder/secret.txt", "/catalogue/escape.jpg"):
        response = client.get(path)
        assert response.status_code == 404 and OUTSIDE_SECRET not in response.content, path


def test_no_route_opens_files_or_urls():
    """Routes get bytes from uploads and items from the index; files and URLs are the operator's
    (settings, the CLI), never a request's."""
    touching = {"open", "Path", "FileResponse", "urlopen", "httpx", "requests", "os", "shutil", "subprocess"}
    for path in sorted((REPO_ROOT / "service" / "routes").glob("*.py")):
        tree = ast.parse(path.read_text())
        used = {ast.unparse(n.func).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Call)}
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & {"read_bytes", "read_text"}
        assert used.isdisjoint(touching | {"read_bytes", "read_text"}), (path.name, used & touching)


# ------------------------------------------------------- the page shows text


def test_hostile_metadata_renders_as_text(browser, guarded: Server, tmp_path: Path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    query = tmp_path / "pattern.png"
    Image.effect_noise((160, 160), 80).convert("RGB").save(query)
    metadata = {"<img src=x onerror=alert('key')>": "a key", "name": "<svg onload=alert('name')>",
                "nested": {"html": "<script>alert('nested')</script>"}, "image": "javascript:alert('image')"}
    assert index_one(guarded, "xss-metadata", query.read_bytes(), metadata, **AUTH).json()["indexed"] == 1
    try:
        # upload_and_wait wants the service tests' Served; only its .server is used
        card = upload_and_wait(browser, SimpleNamespace(server=guarded), query)[0]
        assert card.find_element(By.CSS_SELECTOR, ".id").text == "xss-metadata"
        shown = card.find_element(By.CSS_SELECTOR, ".metadata").text
        assert "<img src=x onerror=alert('key')>" in shown and "<script>alert('nested')</script>" in shown
        assert browser.find_elements(By.CSS_SELECTOR, "#results script, #results svg, #results .metadata img") == []
        thumbnail = card.find_element(By.CSS_SELECTOR, "img")
        assert not (thumbnail.get_attribute("src") or "").startswith("javascript:")
        with pytest.raises(NoAlertPresentException):
            _ = browser.switch_to.alert
    finally:
        assert guarded.client.delete("/items/xss-metadata", headers=AUTH).status_code == 200

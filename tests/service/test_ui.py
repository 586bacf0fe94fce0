"""The search page in headless Chromium: upload an image, see the neighbours, with data shown as text."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.service.conftest import Served
from tests.service.servers import AUTH, files

CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOSTILE_ID = '<script>alert("id")</script>'
HOSTILE_NAME = '<img src=x onerror=alert("name")>'


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if shutil.which("chromium") is None or not CHROMEDRIVER.exists():
        pytest.skip("Chromium is not installed: apt-get install -y chromium chromium-driver (.ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def upload_and_wait(browser, served: Served, image: Path) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served.server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(browser, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card") or d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def test_upload_shows_neighbours_with_thumbnails(browser, served: Served, sample_images):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    query = sample_images[0]
    cards = upload_and_wait(browser, served, query.path)
    first = cards[0]
    assert first.find_element(By.CSS_SELECTOR, ".id").text == query.id
    assert first.find_element(By.CSS_SELECTOR, ".distance").text == "distance 0"
    metadata = first.find_element(By.CSS_SELECTOR, ".metadata").text
    assert "category" in metadata and query.name in metadata
    thumbnail = first.find_element(By.CSS_SELECTOR, "img")
    assert thumbnail.get_attribute("src").endswith("/catalogue/" + query.id)
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumbnail) > 0
    assert "results" in browser.find_element(By.ID, "status").text
    preview = browser.find_element(By.ID, "query-preview")
    assert browser.execute_script("return arguments[0].naturalWidth", preview) > 0, "the query preview is not shown"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    first.find_element(By.CSS_SELECTOR, ".similar").click()
    WebDriverWait(browser, 60).until(lambda d: "similar to" in d.find_element(By.ID, "status").text)
    shown = [card.find_element(By.CSS_SELECTOR, ".id").text
             for card in browser.find_elements(By.CSS_SELECTOR, "#results .card")]
    assert shown and query.id not in shown


def test_ids_and_metadata_render_as_text(browser, served: Served, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    query = tmp_path / "pattern.png"
    Image.effect_noise((160, 160), 90).convert("RGB").save(query)
    client = served.server.client
    indexed = client.post("/index", headers=AUTH, files=files([("pattern.png", query.read_bytes())]),
                          data={"items": json.dumps([{"id": HOSTILE_ID, "metadata": {"name": HOSTILE_NAME}}])})
    assert indexed.json()["indexed"] == 1
    try:
        first = upload_and_wait(browser, served, query)[0]
        assert first.find_element(By.CSS_SELECTOR, ".id").text == HOSTILE_ID
        assert HOSTILE_NAME in first.find_element(By.CSS_SELECTOR, ".metadata").text
        assert browser.find_elements(By.CSS_SELECTOR, "#results script, #results .metadata img") == []
        with pytest.raises(NoAlertPresentException):
            _ = browser.switch_to.alert
    finally:
        assert client.delete(f"/items/{HOSTILE_ID}", headers=AUTH).status_code == 200


def test_errors_are_shown(browser, served: Served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not pixels")
    browser.get(served.server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "error").text)
    assert "not a recognised image" in browser.find_element(By.ID, "error").text

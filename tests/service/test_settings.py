"""The one Settings object: DEEPHASH_* variables, empty meaning unset, and limits that must agree."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_variables_configure_it(monkeypatch):
    monkeypatch.setenv("DEEPHASH_MAX_K", "7")
    monkeypatch.setenv("DEEPHASH_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("DEEPHASH_API_KEY", "s3cret")
    settings = Settings()
    assert settings.max_k == 7 and settings.index_location == "redis://cache:6379/2"
    assert settings.api_key.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)


def test_empty_values_mean_unset(monkeypatch):
    for name in ("DEEPHASH_API_KEY", "DEEPHASH_REDIS_URL", "DEEPHASH_DEVICE", "DEEPHASH_SAMPLE_CATALOGUE"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.api_key, settings.redis_url, settings.device, settings.sample_catalogue_path) == (None,) * 4
    assert settings.index_location == str(Path("var/index"))


def test_the_biggest_request_must_fit_the_queue():
    with pytest.raises(ValidationError, match="async_index_threshold"):
        Settings(queue_size=8, batch_size=8, async_index_threshold=9)


def test_nonsense_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv("DEEPHASH_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        Settings()

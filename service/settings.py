"""Every knob of the service in one place, read from DEEPHASH_* environment variables."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The committed default checkpoint sits next to this package in the repository.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "default"


class Settings(BaseSettings):
    """Service configuration; each field is DEEPHASH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="DEEPHASH_", extra="ignore", frozen=True)

    # model
    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="checkpoint file or the directory holding it")
    device: str | None = Field(None, description="torch device (cpu, cuda, cuda:1); empty = cuda when available")

    # where things live
    index_path: Path = Field(Path("var/index"), description="directory of the embedded index (when no Redis URL)")
    jobs_path: Path = Field(Path("var/jobs"), description="job state and spooled uploads (when no Redis URL)")
    redis_url: str | None = Field(None, description="redis://... : index and jobs live in Redis, shared by replicas")
    redis_namespace: str = Field("deephash", min_length=1, description="prefix of every Redis key of this catalogue")

    # sample catalogue indexed at start
    data_dir: Path = Field(Path("../shared/data"), description="folder holding the data sets (grocery/)")
    sample_catalogue: str = Field("grocery/dataset/train.txt",
                                  description="list file or folder indexed at start (relative to data_dir); "
                                              "empty: none")

    # HTTP
    host: str = Field("127.0.0.1", description="address `deephash serve` listens on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port `deephash serve` listens on")
    api_key: SecretStr | None = Field(None, description="when set, POST /index and DELETE need it in X-API-Key")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="JSON log lines at this level and above (DEBUG adds health/ready/metrics polls)")

    # input limits
    max_upload_bytes: int = Field(10 * 2**20, ge=1024, description="largest accepted image file")
    max_index_bytes: int = Field(256 * 2**20, ge=1024, description="largest POST /index request body")
    max_index_items: int = Field(1000, ge=1, description="most images in one POST /index request")
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images are refused as decompression bombs")
    max_k: int = Field(100, ge=1, le=1000, description="largest k a search may ask for")

    # encoding
    batch_size: int = Field(16, ge=1, description="images the encoder runs at once")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for images still being decoded before it runs")
    queue_size: int = Field(64, ge=1, description="images admitted for decode+encode at once; beyond: 503")
    decode_threads: int = Field(2, ge=1, description="threads decoding and preprocessing images")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of an overload 503")

    # background indexing jobs
    async_index_threshold: int = Field(32, ge=1, description="POST /index with more images runs as a job (202)")
    job_lease_s: float = Field(30.0, gt=0, description="a running job not heard of for this long is resumed")
    job_ttl_s: int = Field(7 * 86400, ge=60, description="how long finished job reports are kept")

    @field_validator("device", "redis_url", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # DEEPHASH_API_KEY= (as compose files write it) means "no key", not "the empty key".
        return None if value == "" else value

    @model_validator(mode="after")
    def _fits_the_queue(self) -> Settings:
        # Requests are admitted whole, so the biggest one must fit in the queue.
        for name in ("batch_size", "async_index_threshold"):
            if getattr(self, name) > self.queue_size:
                raise ValueError(f"{name} ({getattr(self, name)}) must not exceed queue_size ({self.queue_size})")
        return self

    @property
    def sample_catalogue_path(self) -> Path | None:
        return self.data_dir / self.sample_catalogue if self.sample_catalogue else None

    @property
    def index_location(self) -> str:
        """What index.open_store opens: the Redis URL when there is one, else the directory."""
        return self.redis_url or str(self.index_path)


@lru_cache
def get_settings() -> Settings:
    return Settings()

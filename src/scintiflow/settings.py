"""The one place that reads the environment.

Every other module receives a `Settings` (or plain values taken from it). Variables use the
prefix `SCINTIFLOW_`, e.g. `SCINTIFLOW_STORE_URL=s3://bucket/prefix`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Prefixes(BaseSettings):
    """Key prefixes inside the store (the layout: docs/storage.md)."""

    model_config = SettingsConfigDict(env_prefix="SCINTIFLOW_PREFIX_", extra="ignore")

    exports: str = "exports"
    labels: str = "labels"
    readers: str = "readers"
    models: str = "models"
    results: str = "results"
    quarantine: str = "quarantine"
    state: str = "state"


class Settings(BaseSettings):
    """Runtime configuration, read once from `SCINTIFLOW_*` variables."""

    model_config = SettingsConfigDict(env_prefix="SCINTIFLOW_", extra="ignore")

    store_url: str = Field(
        default="./scintiflow-data",
        description="Where the bucket lives: a folder, file://..., or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto, ...); None means AWS."
    )
    s3_region: str = Field(default="us-east-1", description="Region for the S3 client.")
    s3_max_attempts: int = Field(default=5, ge=1, description="boto3 standard-mode retries.")
    s3_read_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds an S3 response may stall before it is retried."
    )
    phi_hash_key: SecretStr = Field(
        default=SecretStr("scintiflow-default-phi-key"),
        description="HMAC key for one-way patient/UID hashes. Set a secret one in production.",
    )
    preferred_view: str = Field(
        default="anterior", description="Which view to take from a multi-view NM object."
    )
    decode_workers: int = Field(default=0, ge=0, description="Decode threads; 0 = CPU count.")
    read_retries: int = Field(
        default=2, ge=0, description="Extra reads of an export after a storage error."
    )
    read_retry_delay_s: float = Field(
        default=2.0, ge=0, description="Seconds before the first re-read (doubled each time)."
    )
    publish_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a run's claim on its inputs is kept before another run may take "
        "it over (docs/reliability.md).",
    )
    prefixes: Prefixes = Field(default_factory=Prefixes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()

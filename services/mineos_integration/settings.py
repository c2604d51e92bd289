"""Every setting of both services, read once from the environment (Secret Manager values arrive as
env vars on Cloud Run). README.md's configuration table lists the same names."""

from functools import cache
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mineos_integration.signature import SignatureAlgorithm, SignatureEncoding, SignatureScheme

EU_API_BASE_URL = "https://api.portal.saymine.com"
MAX_SIGNED_URL_TTL_SECONDS = 7 * 24 * 3600  # the V4 signing limit

_PLACEHOLDERS = {
    "changeme",
    "change-me",
    "replace-me",
    "placeholder",
    "secret",
    "todo",
    "xxx",
    "none",
    "null",
}


class ConfigurationError(RuntimeError):
    """A setting is missing or unusable; the service refuses to start."""


def _refuse_placeholder(value: str, name: str) -> str:
    stripped = value.strip()
    if not stripped or stripped.lower() in _PLACEHOLDERS or stripped.startswith(("<", "${")):
        raise ValueError(f"{name} is empty or a placeholder; set the real value (Secret Manager)")
    return stripped


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    google_cloud_project: str = ""
    log_level: str = "INFO"

    # Ingress
    mine_signing_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    mine_signature_algorithm: SignatureAlgorithm = SignatureAlgorithm.SHA256
    mine_signature_encoding: SignatureEncoding = SignatureEncoding.BASE64
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    requests_topic: str = "mineos-requests"
    publish_timeout_seconds: float = Field(default=10.0, gt=0)

    # Ledger
    ledger_collection: str = "mineos_operations"
    ledger_retention_days: int = Field(default=90, gt=0)
    lease_seconds: int = Field(default=600, gt=0)
    firestore_timeout_seconds: float = Field(default=10.0, gt=0)

    # Collector
    data_map_path: str = ""
    export_bucket: str = ""
    signed_url_ttl_seconds: int = Field(default=24 * 3600, gt=0, le=MAX_SIGNED_URL_TTL_SECONDS)
    url_signing_key_file: str = ""
    inline_data_max_bytes: int = Field(default=16 * 1024, ge=0)
    preview_deadline_seconds: float = Field(default=5.0, gt=0, le=30)
    anonymisation_key: SecretStr = SecretStr("")  # HMAC key of `hash` anonymisation in the data map
    source_timeout_seconds: float = Field(default=30.0, gt=0)  # bounds each call to a data source

    # MineOS status API
    mineos_api_base_url: str = EU_API_BASE_URL
    mineos_api_key: SecretStr = SecretStr("")
    mineos_timeout_seconds: float = Field(default=10.0, gt=0)
    mineos_max_attempts: int = Field(default=5, ge=1, le=10)
    mineos_backoff_seconds: float = Field(default=1.0, ge=0)

    @field_validator("mine_signing_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [_refuse_placeholder(part, "MINE_SIGNING_SECRETS") for part in value.split(",")]
        return value

    @field_validator("mineos_api_key", mode="before")
    @classmethod
    def _check_api_key(cls, value: object) -> object:
        if isinstance(value, str) and value:
            return _refuse_placeholder(value, "MINEOS_API_KEY")
        return value

    @field_validator("mineos_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def signature_scheme(self) -> SignatureScheme:
        return SignatureScheme(self.mine_signature_algorithm, self.mine_signature_encoding)

    @property
    def signing_secrets(self) -> list[str]:
        return [secret.get_secret_value() for secret in self.mine_signing_secrets]

    def require(self, *names: str) -> None:
        """Refuse to start when a setting a service needs is unset."""
        missing = [name.upper() for name in names if not _is_set(getattr(self, name))]
        if missing:
            raise ConfigurationError(f"missing settings: {', '.join(missing)}")


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


@cache
def get_settings() -> Settings:
    """The process's settings; tests set the environment first and call `get_settings.cache_clear()`."""
    try:
        return Settings()
    except ValidationError as error:
        # Built from the error list without the input values: those may be secrets.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise ConfigurationError(problems) from None

"""Settings: everything configurable, read from MAILROOM_* environment variables."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BUNDLED_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"

CommaList = Annotated[list[str], NoDecode]


class WriterMode(StrEnum):
    """Where the SMTP listener's group writer runs (app/ingest.py)."""

    PROCESS = "process"  # a process of its own: the listener and the writer each get a core
    THREAD = "thread"  # a thread of the serving process: one process, one GIL


class Settings(BaseSettings):
    """Built once per process by create_app()/the CLI; never read at import time."""

    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str = ""
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    org_domains: CommaList = ["example.com"]
    capture_addresses: CommaList = ["capture@mailroom.example.com"]
    policy: Path = BUNDLED_POLICY
    secret_key: SecretStr | None = None
    hostname: str = "mailroom.example.com"
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    smtp_max_connections: int = Field(default=200, gt=0)
    smtp_max_connections_per_client: int = Field(default=50, gt=0)
    smtp_max_recipients: int = Field(default=20, gt=0)
    smtp_idle_timeout: float = Field(default=300.0, gt=0)
    smtp_data_timeout: float = Field(default=600.0, gt=0)
    smtp_writer: WriterMode = WriterMode.PROCESS
    min_free_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    require_submitter_proof: bool = False
    trusted_relays: CommaList = []
    authserv_id: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    smtps_port: int | None = Field(default=None, ge=0, le=65535)
    spamd_host: str | None = None
    spamd_port: int = Field(default=783, ge=1, le=65535)
    auto_migrate: bool = True
    api_rate_per_minute: int = Field(default=600, gt=0)
    api_max_connections: int = Field(default=256, gt=0)
    api_request_timeout: float = Field(default=60.0, gt=0)
    webhook_interval: float = Field(default=2.0, gt=0)
    # Webhooks go to public addresses only, and to these networks (for internal receivers).
    webhook_allow_networks: Annotated[list[IPvAnyNetwork], NoDecode] = []
    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator(
        "org_domains",
        "capture_addresses",
        "trusted_relays",
        "webhook_allow_networks",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @field_validator("org_domains", "capture_addresses")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [item.strip().lower() for item in value]

    @field_validator("org_domains", "capture_addresses")
    @classmethod
    def _as_mail_spells_them(cls, value: list[str]) -> list[str]:
        """A Unicode domain as mail spells it (IDNA A-labels), as every parsed address has it
        and the listener reads MAIL FROM and RCPT TO: `bücher.example` is compared as
        `xn--bcher-kva.example`."""
        if all(item.isascii() for item in value):
            return value
        from capture.parse import as_mail_spells_it, mail_domain  # not every command's cost

        return [
            as_mail_spells_it(item) if "@" in item else mail_domain(item) or item for item in value
        ]

    @field_validator("trusted_relays")
    @classmethod
    def _ip_networks(cls, value: list[str]) -> list[str]:
        """Every relay an IP address or network: the listener reads them at each connection,
        where one it cannot read would fail every connection."""
        for relay in value:
            try:
                ipaddress.ip_network(relay, strict=False)
            except ValueError:
                raise ValueError(f"{relay!r} is not an IP address or network") from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("empty; set a long random value, or unset it for DATA_DIR/secret.key")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _uppercase(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> Settings:
        # Without one neither STARTTLS nor the implicit-TLS port can be served (app/server.py).
        if self.tls_cert is None and (self.smtps_port is not None or self.tls_key is not None):
            raise ValueError("MAILROOM_SMTPS_PORT and MAILROOM_TLS_KEY need MAILROOM_TLS_CERT")
        return self

    @property
    def resolved_authserv_id(self) -> str:
        return self.authserv_id or self.hostname

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'mailroom.db'}"

    def ensure_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:  # the operator's to put right: said, not a fault report
            reason = error.strerror or type(error).__name__
            raise StartError(
                f"MAILROOM_DATA_DIR: cannot make {self.data_dir} a folder: {reason}"
            ) from None

    def secret(self) -> bytes:
        """The HMAC key: from the environment, else generated once into the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        self.ensure_data_dir()
        path = self.data_dir / "secret.key"
        if not path.exists():
            _write_new_secret(path)
        key = path.read_text().strip()
        if not key:  # a key anyone has would seal and digest nothing
            raise SecretKeyError(
                f"{path} is empty; if nothing was ever stored under it, remove it and start "
                "again for a new one, else restore it from your backups"
            )
        return key.encode()


class StartError(RuntimeError):
    """Why Mailroom cannot start, for the operator to put right; its text holds no mail."""


class SecretKeyError(StartError):
    """The secret key cannot be used; the text says what to do (it holds no key)."""


def _write_new_secret(path: Path) -> None:
    """A new key, whole or not at all: written and synced beside `path` (0600), then linked
    to it, unless another process's key got there first, which then is the key."""
    fd, written = tempfile.mkstemp(dir=path.parent, prefix=".secret.key.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(written, path)
    finally:
        os.unlink(written)


def invalid_settings(error: ValidationError) -> str | None:
    """Each setting `Settings()` refused, by its environment variable and what is wrong with
    it; None when the error is not about settings. Never the value given: it may be a secret
    (the key, a database password)."""
    if error.title != Settings.__name__:
        return None
    prefix = Settings.model_config["env_prefix"]
    return "\n".join(
        f"  {prefix}{str(problem['loc'][0]).upper()}: {problem['msg']}"
        if problem["loc"]
        else f"  {problem['msg']}"  # a rule across settings, which names them itself
        for problem in error.errors(include_url=False, include_input=False)
    )

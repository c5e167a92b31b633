"""Typed relay settings: defaults < TOML file < ``VOX_*`` environment < explicit arguments.

Load them with :func:`load_settings`; nothing reads the environment at import time.

* Environment variables use the ``VOX_`` prefix and ``__`` for nesting:
  ``VOX_DATABASE_URL``, ``VOX_BRAND__NAME``, ``VOX_LIMITS__MAX_RECIPIENTS``.
* An optional TOML file (``VOX_CONFIG=/etc/vox/relay.toml`` or ``vox-relay serve --config``)
  has the same shape: top-level keys plus ``[brand]`` and ``[limits]`` tables.
* Unsafe or nonsensical values (a token TTL of a year, an ``http://`` logo on a public
  deployment, a ciphertext limit larger than the frame limit, ...) are refused at load time
  with a :class:`pydantic.ValidationError` naming the field.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BrandSettings",
    "ConfigFileError",
    "LimitSettings",
    "PushSettings",
    "RegistrationPolicy",
    "Settings",
    "load_settings",
]

MiB = 1024 * 1024
DAY = 24 * 3600


class ConfigFileError(ValueError):
    """The TOML settings file is missing or not valid TOML (or a ``VOX_<TABLE>`` variable is
    not JSON)."""


class RegistrationPolicy(StrEnum):
    """Who may create an account."""

    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrandSettings(_Section):
    """What clients show: name, colours (``#rrggbb``), logo URL and welcome text."""

    name: str = Field("Vox", min_length=1, max_length=64)
    primary_color: str = Field("#4f46e5", pattern=r"^#[0-9a-fA-F]{6}$")
    accent_color: str = Field("#22c55e", pattern=r"^#[0-9a-fA-F]{6}$")
    background_color: str = Field("#0f172a", pattern=r"^#[0-9a-fA-F]{6}$")
    logo_url: str | None = Field(None, max_length=2048)
    welcome_text: str = Field("Welcome to Vox: end-to-end encrypted messaging.", max_length=2000)

    @field_validator("logo_url")
    @classmethod
    def _https_logo(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        local = value.startswith(("http://localhost", "http://127.0.0.1"))
        if not value.startswith("https://") and not local:
            raise ValueError("logo_url must be an https:// URL (http only for localhost)")
        return value


class LimitSettings(_Section):
    """Every bound the relay enforces; all are served at ``/v1/config``."""

    max_frame_bytes: int = Field(2 * MiB, ge=4096, le=64 * MiB)
    max_ciphertext_bytes: int = Field(256 * 1024, ge=1024, le=32 * MiB)
    max_recipients: int = Field(1000, ge=1, le=10_000)
    max_queue_depth: int = Field(10_000, ge=10, le=1_000_000)
    max_attachment_bytes: int = Field(100 * MiB, ge=1024, le=4096 * MiB)
    max_body_bytes: int = Field(1 * MiB, ge=4096, le=64 * MiB)
    messages_per_second_per_device: float = Field(200.0, gt=0, le=100_000)
    requests_per_minute_per_ip: int = Field(600, ge=1, le=1_000_000)
    bundle_fetches_per_minute_per_device: int = Field(120, ge=1, le=100_000)
    token_ttl_seconds: int = Field(7 * DAY, ge=60, le=90 * DAY)
    challenge_ttl_seconds: int = Field(120, ge=10, le=3600)
    envelope_ttl_seconds: int = Field(30 * DAY, ge=60, le=365 * DAY)
    attachment_ttl_seconds: int = Field(30 * DAY, ge=60, le=365 * DAY)
    prekey_batch_max: int = Field(100, ge=1, le=1000)
    prekey_max_stock: int = Field(500, ge=1, le=10_000)
    prekey_low_threshold: int = Field(10, ge=0, le=1000)
    # -- hostile clients: connections, frames, connect and login rates (docs/threat-model.md)
    #: Seconds for a request head (and a WebSocket upgrade) to arrive completely.
    header_timeout_seconds: float = Field(10.0, ge=0.2, le=300)
    #: Seconds of waiting a request body gets for free; past them it must keep arriving at
    #: ``min_body_bytes_per_second`` on average (or ``408 body_timeout``).
    body_timeout_seconds: float = Field(10.0, ge=0.2, le=300)
    #: The slowest average rate a request body (also an attachment upload) may arrive at.
    min_body_bytes_per_second: int = Field(1024, ge=1, le=100 * MiB)
    #: Seconds for the ``auth`` frame after the WebSocket opened.
    auth_timeout_seconds: float = Field(10.0, ge=0.2, le=300)
    #: Seconds an idle HTTP keep-alive connection is kept.
    keepalive_timeout_seconds: float = Field(15.0, ge=0.2, le=600)
    #: A lingering close (a response that closes the connection while the request body is
    #: still arriving; a WebSocket's close 1009) reads and drops what the peer still sends
    #: for at most this many seconds, and (HTTP only: the rest of an oversized WebSocket
    #: frame is always read) this many bytes, before it closes.
    linger_timeout_seconds: float = Field(2.0, ge=0.1, le=300)
    max_linger_bytes: int = Field(256 * 1024, ge=0, le=64 * MiB)
    #: Open TCP connections in total (lowered to the open-file limit minus a margin).
    max_connections: int = Field(10_000, ge=16, le=1_000_000)
    #: Extra connections kept for ``/healthz``, ``/readyz`` and ``/metrics`` only.
    connection_reserve: int = Field(64, ge=1, le=10_000)
    #: Open connections per client address that are not authenticated WebSockets.
    max_unauthenticated_connections_per_address: int = Field(64, ge=1, le=1_000_000)
    #: Authenticated WebSockets per client address.
    max_authenticated_connections_per_address: int = Field(128, ge=1, le=1_000_000)
    ws_connects_per_minute_per_address: int = Field(120, ge=1, le=1_000_000)
    ws_connects_per_minute_per_device: int = Field(30, ge=1, le=1_000_000)
    #: Every frame, counted before it is parsed (burst: twice the rate).
    frames_per_second_per_device: float = Field(400.0, gt=0, le=1_000_000)
    #: Frame bytes (UTF-8), counted before parsing (burst: 2 s or one largest frame).
    frame_bytes_per_second_per_device: int = Field(8 * MiB, ge=4096, le=1024 * MiB)
    #: Frames answered with an ``error`` (or malformed); the socket closes 4400 past it.
    invalid_frames_per_minute_per_device: int = Field(20, ge=1, le=100_000)
    messages_per_second_per_account: float = Field(400.0, gt=0, le=1_000_000)
    challenges_per_minute_per_address: int = Field(30, ge=1, le=100_000)
    #: Outstanding login challenges per device, and per (device, requesting address).
    max_challenges_per_device: int = Field(64, ge=2, le=10_000)
    max_challenges_per_address_per_device: int = Field(8, ge=1, le=1000)
    #: Envelopes delivered on one WebSocket and not yet acked (delivery pauses at it).
    max_inflight: int = Field(500, ge=1, le=100_000)
    #: Sends of one WebSocket awaiting their answer (past it: ``busy``).
    max_pending_sends: int = Field(256, ge=1, le=100_000)
    #: New deliveries to a WebSocket pause while its outbound buffer holds more than this ...
    outbound_pause_bytes: int = Field(512 * 1024, ge=16 * 1024, le=256 * MiB)
    #: ... and a WebSocket whose outbound buffer grows past this is disconnected, as is one
    #: that has accepted nothing for ``send_timeout_seconds`` while output waits.
    max_outbound_bytes: int = Field(8 * MiB, ge=64 * 1024, le=4096 * MiB)
    send_timeout_seconds: float = Field(15.0, ge=0.5, le=600)
    # -- storage quotas and per-target limits (docs/threat-model.md: what one device costs) --
    #: Bytes queued for one device (payload bytes of its undelivered envelopes).
    max_queue_bytes: int = Field(256 * MiB, ge=1024, le=64 * 1024 * MiB)
    #: Share (0..1] of a device's queue depth and bytes that one *other* account may fill.
    queue_share_per_sender: float = Field(0.25, gt=0, le=1)
    #: Bytes of unexpired attachments one device may have stored.
    max_attachment_bytes_per_device: int = Field(2048 * MiB, ge=1024, le=1024 * 1024 * MiB)
    #: Bytes of attachments stored on the relay in total.
    max_attachment_bytes_total: int = Field(100 * 1024 * MiB, ge=1024, le=2**50)
    #: Resumable uploads (docs/protocol-ws.md §9.1): bytes one ``PATCH`` may carry,
    #: how long an unfinished upload lives, how many one device may have open at once.
    max_upload_chunk_bytes: int = Field(8 * MiB, ge=64 * 1024, le=64 * MiB)
    upload_ttl_seconds: int = Field(DAY, ge=60, le=30 * DAY)
    max_concurrent_uploads_per_device: int = Field(4, ge=1, le=100)
    #: Below this many free bytes in ``data_dir`` uploads and sends are refused (0 = off).
    min_free_disk_bytes: int = Field(1024 * MiB, ge=0, le=2**62)
    #: Accounts one client address may register per hour.
    registrations_per_hour_per_ip: int = Field(20, ge=1, le=1_000_000)
    #: Claims of one device's one-time prekeys per hour, all requesters together; past it,
    #: bundles carry the signed and last-resort prekeys only.
    prekey_claims_per_hour_per_target: int = Field(100, ge=1, le=100_000)
    #: Claims of one device's one-time prekeys per hour by one requesting device.
    prekey_claims_per_hour_per_requester: int = Field(10, ge=1, le=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_ciphertext_bytes > self.max_frame_bytes:
            raise ValueError("max_ciphertext_bytes must not exceed max_frame_bytes")
        if self.prekey_low_threshold >= self.prekey_max_stock:
            raise ValueError("prekey_low_threshold must be below prekey_max_stock")
        if self.max_challenges_per_address_per_device > self.max_challenges_per_device:
            raise ValueError("max_challenges_per_address_per_device exceeds the per-device cap")
        if self.max_queue_bytes < self.max_ciphertext_bytes:
            raise ValueError("max_queue_bytes must be at least max_ciphertext_bytes")
        if self.max_attachment_bytes_per_device > self.max_attachment_bytes_total:
            raise ValueError(
                "max_attachment_bytes_per_device must not exceed max_attachment_bytes_total"
            )
        if self.prekey_claims_per_hour_per_requester > self.prekey_claims_per_hour_per_target:
            raise ValueError(
                "prekey_claims_per_hour_per_requester must not exceed "
                "prekey_claims_per_hour_per_target"
            )
        # A socket below the pause may still be handed one delivery (its base64 ciphertext
        # and JSON): the disconnect threshold must leave room for it.
        if self.max_outbound_bytes < self.outbound_pause_bytes + 2 * self.max_ciphertext_bytes:
            raise ValueError(
                "max_outbound_bytes must be at least "
                "outbound_pause_bytes + 2 * max_ciphertext_bytes"
            )
        if self.prekey_batch_max > self.prekey_max_stock:
            raise ValueError("prekey_batch_max must not exceed prekey_max_stock")
        # A full batch of one-time ML-KEM prekeys (~1.7 KB each in JSON) must fit in a body.
        if self.prekey_batch_max * 1700 + 16 * 1024 > self.max_body_bytes:
            raise ValueError("max_body_bytes is too small for a full prekey batch")
        return self


class PushSettings(_Section):
    """Content-free Web Push to offline devices (``docs/self-hosting.md``, "Push")."""

    enabled: bool = True
    #: At most one push per device per this many seconds (a burst gives one notification).
    coalesce_seconds: int = Field(30, ge=1, le=24 * 3600)
    #: ``TTL`` header: how long the push service keeps an undelivered push.
    ttl_seconds: int = Field(DAY, ge=0, le=28 * DAY)
    #: ``Urgency`` header (RFC 8030 section 5.3).
    urgency: str = Field("normal", pattern=r"^(very-low|low|normal|high)$")
    max_subscriptions_per_device: int = Field(5, ge=1, le=100)
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: Attempts per push when the push service fails (5xx, 429, network); 404/410 end it.
    max_attempts: int = Field(3, ge=1, le=10)
    #: VAPID ``sub`` claim: ``mailto:`` or ``https:`` contact for push services.
    subject: str | None = Field(
        None, max_length=256, pattern=r"^(mailto:[^\s]+@[^\s]+|https://\S+)$"
    )
    #: The VAPID private key (PEM); default ``<data_dir>/vapid_private_key.pem``.
    vapid_key_file: Path | None = None
    #: Accept ``http://`` and loopback endpoints (tests and local push receivers only).
    allow_loopback_endpoints: bool = False


class Settings(BaseModel):
    """The relay's whole configuration (immutable once loaded; defaults are validated too)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    data_dir: Path = Path("vox-data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = Field("vox:", max_length=64)
    #: While Redis is unreachable, each node polls the database this often for new
    #: envelopes of its connected devices (degraded mode, ``docs/self-hosting.md``).
    redis_outage_poll_seconds: float = Field(1.0, ge=0.1, le=60)
    registration: RegistrationPolicy = RegistrationPolicy.OPEN
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    log_json: bool = True
    #: The relay's public origin; an ``https://`` one is the VAPID contact (``push.subject``
    #: unset) that push services see.
    public_url: str | None = None
    #: Proxies whose ``X-Forwarded-For`` is trusted (comma-separated IPs, or ``*``).
    forwarded_allow_ips: str = "127.0.0.1"
    #: Log one line per HTTP request (method, path, status; never headers or bodies).
    access_log: bool = True
    #: An extra, operator-only listener (e.g. 9100) that serves only ``/healthz``, ``/readyz``
    #: and ``/metrics``, outside every connection cap (bind it to a private address).
    ops_port: int | None = Field(None, ge=1, le=65535)
    ops_host: str = "127.0.0.1"
    #: After an account is deleted its username (and every look-alike of it) stays
    #: reserved this many days before anyone may register it again (0: free at once).
    username_quarantine_days: int = Field(30, ge=0, le=3650)
    brand: BrandSettings = BrandSettings()
    limits: LimitSettings = LimitSettings()
    push: PushSettings = PushSettings()

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _supported_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("https://", "http://localhost", "http://127.0.0.1")):
            raise ValueError("public_url must be https:// (http only for localhost)")
        return value.rstrip("/")

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or a SQLite file ``relay.sqlite3`` inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'relay.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        """True when the relay runs on embedded SQLite."""
        return self.effective_database_url.startswith("sqlite")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings that ``VOX_*`` variables set, as a nested dict of strings.

    Names are case-insensitive; ``VOX_<NAME>`` sets a top-level setting and ``__`` nests
    (``VOX_LIMITS__MAX_RECIPIENTS`` is ``limits.max_recipients``); a whole table may also be
    one JSON object (``VOX_LIMITS='{"max_recipients": 50}'``), which the nested variables
    then update. Variables that name no setting are ignored; an unknown key inside a table
    reaches the table, which refuses it. (The rules of pydantic-settings' environment source,
    which the relay used before; ``tests/server/test_settings_env.py`` compares the two.
    Reading them here keeps pydantic-settings, about 1.3 MB resident, out of the relay.)
    """
    variables = {k.lower(): v for k, v in env.items() if k.lower().startswith("vox_")}
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        key = f"vox_{name}"
        table = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        if not table:
            if key in variables:
                values[name] = variables[key]
            continue
        prefix = key + "__"
        exploded: dict[str, Any] = {}
        for variable, raw in variables.items():
            if variable.startswith(prefix):
                *path, last = variable[len(prefix) :].split("__")
                target: Any = exploded
                for part in path:
                    if isinstance(target, dict):
                        target = target.setdefault(part, {})
                if isinstance(target, dict):
                    target[last] = raw
        if key in variables:
            try:
                whole = json.loads(variables[key])
            except ValueError:
                raise ConfigFileError(f"{key.upper()} is not a JSON object") from None
            values[name] = _deep_merge(whole, exploded) if isinstance(whole, dict) else whole
        elif exploded:
            values[name] = exploded
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigFileError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    config_file: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, ``VOX_*`` variables and overrides.

    ``config_file`` defaults to ``$VOX_CONFIG``. Overrides whose value is ``None`` are
    ignored (so CLI options that were not given do not mask the environment).
    """
    env = dict(os.environ if environ is None else environ)
    path = config_file or env.get("VOX_CONFIG") or None
    merged: dict[str, Any] = _read_toml(Path(path)) if path else {}
    env.pop("VOX_CONFIG", None)
    merged = _deep_merge(merged, _environment(env))
    merged = _deep_merge(merged, {k: v for k, v in overrides.items() if v is not None})
    return Settings(**merged)

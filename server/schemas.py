"""Pydantic wire shapes of the REST API (distinct from the ORM rows in ``server.db``).

Binary fields are standard base64 **with** padding (``B64``); decoding is strict (no
whitespace, no URL-safe alphabet). Unknown JSON fields are rejected.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    WithJsonSchema,
)

__all__ = [
    "B64",
    "USERNAME_PATTERN",
    "AccountDevices",
    "BrandOut",
    "BundleDevice",
    "ChallengeIn",
    "ChallengeOut",
    "ConfigOut",
    "DeviceListIn",
    "DeviceOut",
    "ErrorBody",
    "LimitsOut",
    "OneTimePqPrekeyIn",
    "OneTimePrekeyIn",
    "OneTimePrekeyOut",
    "PrekeyBundle",
    "PrekeyCounts",
    "PrekeyUpload",
    "QueryDeviceId",
    "RegisterIn",
    "RegisterOut",
    "SignedPrekeyIn",
    "TokenIn",
    "TokenOut",
]

USERNAME_PATTERN = r"^[a-z0-9_.-]{3,32}$"
# Integers are strict: JSON ``true`` or ``1.0`` is not an integer (422 ``invalid_request``).
U32 = Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)]
DeviceId = Annotated[StrictInt, Field(ge=1, le=0xFFFFFFFF)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN)]


def _decode_b64(value: object) -> bytes:
    if isinstance(value, bytes):  # building a response from stored bytes
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64 (standard alphabet, with padding)") from exc


def _encode_b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


#: Bytes on the wire as standard, padded base64.
B64 = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    PlainSerializer(_encode_b64, return_type=str),
    WithJsonSchema({"type": "string", "format": "byte", "contentEncoding": "base64"}),
]


def _decimal_digits(value: object) -> object:
    # Query strings are text: accept only plain decimal digits ("1", not "1.0" or "+1").
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("expected a decimal integer")
    return value


#: A device id in a query string (``?device_id=``): decimal digits only, 1 ..= 2^32-1.
QueryDeviceId = Annotated[int, BeforeValidator(_decimal_digits), Field(ge=1, le=0xFFFFFFFF)]


class ErrorBody(BaseModel):
    """The body of every error response (``docs/protocol-relay.md``, "Errors")."""

    error: str = Field(description="stable machine-readable code, e.g. `unknown_user`")
    message: str = Field("", description="human-readable explanation")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


# --- prekeys -----------------------------------------------------------------------------


class SignedPrekeyIn(_In):
    """A signed prekey (X25519) or signed last-resort ML-KEM prekey, opaque to the relay."""

    key_id: U32
    public_key: B64
    signature: B64


class OneTimePrekeyIn(_In):
    """A one-time X25519 prekey (unsigned)."""

    key_id: U32
    public_key: B64


class OneTimePqPrekeyIn(_In):
    """A one-time ML-KEM-768 prekey, signed by the account key."""

    key_id: U32
    public_key: B64
    signature: B64


class PrekeyUpload(_In):
    """``POST /v1/prekeys``: any subset of the device's prekey material."""

    signed_prekey: SignedPrekeyIn | None = None
    last_resort_prekey: SignedPrekeyIn | None = None
    one_time_prekeys: list[OneTimePrekeyIn] = Field(default_factory=list)
    one_time_pq_prekeys: list[OneTimePqPrekeyIn] = Field(default_factory=list)


class PrekeyCounts(BaseModel):
    """Remaining one-time prekeys of the authenticated device."""

    one_time_prekeys: int
    one_time_pq_prekeys: int
    low_threshold: int
    max_stock: int


class SignedPrekeyOut(BaseModel):
    """A signed prekey as served in a bundle."""

    key_id: int
    public_key: B64
    signature: B64


class OneTimePrekeyOut(BaseModel):
    """A claimed one-time prekey (``signature`` is empty for X25519 ones)."""

    key_id: int
    public_key: B64
    signature: B64


class BundleDevice(BaseModel):
    """One device's entry of a prekey bundle."""

    device_id: int
    identity_key: B64
    signed_prekey: SignedPrekeyOut | None
    last_resort_prekey: SignedPrekeyOut | None
    one_time_prekey: OneTimePrekeyOut | None
    one_time_pq_prekey: OneTimePrekeyOut | None


class PrekeyBundle(BaseModel):
    """``GET /v1/prekeys/{username}``."""

    username: str
    account_key: B64
    device_list: B64
    devices: list[BundleDevice]


# --- accounts ----------------------------------------------------------------------------


class RegisterIn(_In):
    """``POST /v1/accounts``."""

    username: Username
    account_key: B64
    device_list: B64
    prekeys: PrekeyUpload
    invite: str | None = Field(None, max_length=128)


class AccountDeleteIn(_In):
    """``DELETE /v1/accounts/me``: the account key's signature over
    ``"VoxAccountDelete-v1" || 0x00 || username`` (UTF-8)."""

    signature: B64


class RegisterOut(BaseModel):
    """Answer to a registration."""

    username: str
    device_id: int
    device_list_version: int


class DeviceOut(BaseModel):
    """A device as listed at ``GET /v1/accounts/{username}/devices``."""

    device_id: int
    identity_key: B64
    auth_key: B64


class AccountDevices(BaseModel):
    """A user's account key, signed device list and the devices derived from it."""

    username: str
    account_key: B64
    device_list: B64
    device_list_version: int
    devices: list[DeviceOut]


class DeviceListIn(_In):
    """``PUT /v1/accounts/{username}/devices``."""

    device_list: B64


# --- auth --------------------------------------------------------------------------------


class ChallengeIn(_In):
    """``POST /v1/auth/challenge``."""

    username: Username
    device_id: DeviceId


class ChallengeOut(BaseModel):
    """A one-shot nonce to sign, valid until ``expires_at`` (Unix seconds)."""

    nonce: B64
    expires_at: int


class TokenIn(_In):
    """``POST /v1/auth/token``."""

    username: Username
    device_id: DeviceId
    nonce: B64
    signature: B64


class TokenOut(BaseModel):
    """A bearer token (base64url, no padding) valid until ``expires_at`` (Unix seconds)."""

    token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_at: int
    device_id: int


# --- config ------------------------------------------------------------------------------


class BrandOut(BaseModel):
    """Brand part of ``/v1/config``."""

    name: str
    primary_color: str
    accent_color: str
    background_color: str
    logo_url: str | None
    welcome_text: str


class LimitsOut(BaseModel):
    """Limits part of ``/v1/config``."""

    max_frame_bytes: int
    max_ciphertext_bytes: int
    max_recipients: int
    max_queue_depth: int
    max_attachment_bytes: int
    max_body_bytes: int
    messages_per_second_per_device: float
    requests_per_minute_per_ip: int
    bundle_fetches_per_minute_per_device: int
    token_ttl_seconds: int
    envelope_ttl_seconds: int
    attachment_ttl_seconds: int
    prekey_batch_max: int
    prekey_max_stock: int
    prekey_low_threshold: int
    # What a well-behaved client paces itself by (docs/protocol-ws.md §7).
    auth_timeout_seconds: float
    ws_connects_per_minute_per_address: int
    ws_connects_per_minute_per_device: int
    frames_per_second_per_device: float
    frame_bytes_per_second_per_device: int
    invalid_frames_per_minute_per_device: int
    messages_per_second_per_account: float
    challenges_per_minute_per_address: int
    max_queue_bytes: int
    queue_share_per_sender: float
    max_attachment_bytes_per_device: int


class ConfigOut(BaseModel):
    """``GET /v1/config``."""

    protocol_version: int
    brand: BrandOut
    registration: str
    limits: LimitsOut

"""REST request and response bodies (``docs/protocol-relay.md``, ``docs/protocol-ws.md`` §9).

Requests (``*In``, :class:`PrekeyUpload`) reject unknown fields; responses ignore unknown
fields, so an older client keeps working against a newer relay. Binary fields are
:data:`~wire.encoding.B64`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wire.encoding import B64, U32, DeviceId, Username

__all__ = [
    "MAX_PUSH_ENDPOINT_LENGTH",
    "AccountDevices",
    "AttachmentCreated",
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
    "RegisterIn",
    "RegisterOut",
    "SignedPrekeyIn",
    "SignedPrekeyOut",
    "SubscriptionIn",
    "SubscriptionKeys",
    "SubscriptionList",
    "SubscriptionOut",
    "TokenIn",
    "TokenOut",
    "UploadIn",
    "UploadOut",
    "VapidOut",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class _Out(BaseModel):
    """Responses: unknown fields ignored (a newer relay may add some)."""


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


class PrekeyCounts(_Out):
    """Remaining one-time prekeys of the authenticated device."""

    one_time_prekeys: int
    one_time_pq_prekeys: int
    low_threshold: int
    max_stock: int


class SignedPrekeyOut(_Out):
    """A signed prekey as served in a bundle."""

    key_id: int
    public_key: B64
    signature: B64


class OneTimePrekeyOut(_Out):
    """A claimed one-time prekey (``signature`` is empty for X25519 ones)."""

    key_id: int
    public_key: B64
    signature: B64


class BundleDevice(_Out):
    """One device's entry of a prekey bundle."""

    device_id: int
    identity_key: B64
    signed_prekey: SignedPrekeyOut | None
    last_resort_prekey: SignedPrekeyOut | None
    one_time_prekey: OneTimePrekeyOut | None
    one_time_pq_prekey: OneTimePrekeyOut | None


class PrekeyBundle(_Out):
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


class RegisterOut(_Out):
    """Answer to a registration."""

    username: str
    device_id: int
    device_list_version: int


class DeviceOut(_Out):
    """A device as listed at ``GET /v1/accounts/{username}/devices``."""

    device_id: int
    identity_key: B64
    auth_key: B64


class AccountDevices(_Out):
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


class ChallengeOut(_Out):
    """A one-shot nonce to sign, valid until ``expires_at`` (Unix seconds)."""

    nonce: B64
    expires_at: int


class TokenIn(_In):
    """``POST /v1/auth/token``."""

    username: Username
    device_id: DeviceId
    nonce: B64
    signature: B64


class TokenOut(_Out):
    """A bearer token (base64url, no padding) valid until ``expires_at`` (Unix seconds)."""

    token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_at: int
    device_id: int


# --- config ------------------------------------------------------------------------------


class BrandOut(_Out):
    """Brand part of ``/v1/config``."""

    name: str
    primary_color: str
    accent_color: str
    background_color: str
    logo_url: str | None
    welcome_text: str


class LimitsOut(_Out):
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
    max_upload_chunk_bytes: int
    upload_ttl_seconds: int
    max_concurrent_uploads_per_device: int


class VapidOut(BaseModel):
    """``GET /v1/push/vapid``."""

    public_key: str
    content_encoding: str


class ConfigOut(_Out):
    """``GET /v1/config``."""

    protocol_version: int
    brand: BrandOut
    registration: str
    limits: LimitsOut
    #: Web Push: the relay's VAPID key (as ``GET /v1/push/vapid``); ``None`` when push is off.
    push: VapidOut | None = None


# --- push (``/v1/push``) -------------------------------------------------------------------

MAX_PUSH_ENDPOINT_LENGTH = 1024
"""The longest push-service endpoint URL the relay stores."""


class SubscriptionKeys(_In):
    """RFC 8291 keys, base64url (padding optional)."""

    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=200)


class SubscriptionIn(_In):
    """``POST /v1/push/subscriptions``: ``PushSubscription.toJSON()`` of a browser (or the
    same fields from UnifiedPush)."""

    endpoint: str = Field(max_length=MAX_PUSH_ENDPOINT_LENGTH)
    expirationTime: int | None = None
    keys: SubscriptionKeys


class SubscriptionOut(BaseModel):
    """A stored subscription."""

    id: str
    endpoint: str
    created_at: int


class SubscriptionList(BaseModel):
    """``GET /v1/push/subscriptions``."""

    subscriptions: list[SubscriptionOut]


# --- attachments and errors --------------------------------------------------------------


class AttachmentCreated(_Out):
    """The upload's id (256-bit random, unguessable), size and expiry (Unix seconds)."""

    id: str
    size: int
    expires_at: int


class UploadIn(BaseModel):
    """``POST /v1/attachments/uploads``: the blob's total size, declared up front."""

    size: int = Field(ge=1)


class UploadOut(_Out):
    """A resumable upload's state: bytes received so far (``offset``) of ``size``; once
    finished, the attachment it became."""

    upload_id: str
    size: int
    offset: int
    chunk_bytes: int
    expires_at: int
    attachment: AttachmentCreated | None = None


class ErrorBody(_Out):
    """Every REST error response: a machine code (:class:`~wire.codes.RestErrorCode`, kept as
    ``str`` when unknown) and a human-readable message."""

    error: str = Field(description="stable machine-readable code, e.g. `unknown_user`")
    message: str = Field("", description="human-readable explanation")

"""Machine codes: REST ``error`` codes, WebSocket ``error``-frame codes and close codes.

Both sides compare codes with these enums, never with string literals. Parsers keep an
unknown code as a plain ``str`` (a newer relay may add codes); ``ErrorCode(x)`` on a known
code gives the member.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["RETRYABLE_SEND_ERRORS", "CloseCode", "ErrorCode", "RestErrorCode"]


class ErrorCode(StrEnum):
    """``code`` of a WebSocket ``error`` frame (``docs/protocol-ws.md`` §4.2)."""

    MALFORMED = "malformed"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    BAD_BASE64 = "bad_base64"
    TOO_LARGE = "too_large"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    DUPLICATE_RECIPIENT = "duplicate_recipient"
    BAD_RECIPIENT = "bad_recipient"
    UNKNOWN_USER = "unknown_user"
    QUEUE_FULL = "queue_full"
    QUEUE_SHARE_FULL = "queue_share_full"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    BUSY = "busy"
    SHUTTING_DOWN = "shutting_down"
    ACK_UNKNOWN = "ack_unknown"
    INTERNAL = "internal"
    RATE_LIMITED = "rate_limited"
    #: The send's ``after`` (its lane predecessor) is not stored for this device: nothing was
    #: stored; resend the lane from the predecessor (``docs/protocol-ws.md`` §3.1.4).
    PREDECESSOR_MISSING = "predecessor_missing"


RETRYABLE_SEND_ERRORS = frozenset(
    {ErrorCode.BUSY, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED, ErrorCode.SHUTTING_DOWN}
)
"""Send refusals after which the same send (same client id) is retried later: nothing was
stored and the cause is transient."""


class RestErrorCode(StrEnum):
    """``error`` of a REST error body ``{"error": code, "message": text}``
    (``docs/protocol-relay.md``, Errors)."""

    MALFORMED_JSON = "malformed_json"
    BAD_REQUEST = "bad_request"
    INVALID_KEY = "invalid_key"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_DEVICE_LIST = "invalid_device_list"
    MISSING_PREKEYS = "missing_prekeys"
    DUPLICATE_KEY_ID = "duplicate_key_id"
    MISSING_TOKEN = "missing_token"  # noqa: S105 - a code, not a secret
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    TOKEN_EXPIRED = "token_expired"  # noqa: S105
    TOKEN_REVOKED = "token_revoked"  # noqa: S105
    INVALID_CHALLENGE = "invalid_challenge"
    CHALLENGE_EXPIRED = "challenge_expired"
    BAD_SIGNATURE = "bad_signature"
    REGISTRATION_CLOSED = "registration_closed"
    INVITE_REQUIRED = "invite_required"
    INVALID_INVITE = "invalid_invite"
    NOT_YOUR_ACCOUNT = "not_your_account"
    DEVICE_REVOKED = "device_revoked"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    USERNAME_TAKEN = "username_taken"
    USERNAME_LOOKALIKE = "username_lookalike"
    USERNAME_QUARANTINED = "username_quarantined"
    ACCOUNT_DELETED = "account_deleted"
    STALE_DEVICE_LIST = "stale_device_list"
    PREKEY_STOCK_FULL = "prekey_stock_full"
    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"  # 408: the body arrived too slowly (edge deadline)
    PREKEY_BATCH_TOO_LARGE = "prekey_batch_too_large"
    TOO_LARGE = "too_large"
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    INTERNAL = "internal"
    # attachments (docs/protocol-ws.md §9)
    TRUNCATED = "truncated"
    UNKNOWN_ATTACHMENT = "unknown_attachment"
    UNKNOWN_UPLOAD = "unknown_upload"
    OFFSET_MISMATCH = "offset_mismatch"
    UPLOAD_INCOMPLETE = "upload_incomplete"
    BEYOND_SIZE = "beyond_size"
    TOO_MANY_UPLOADS = "too_many_uploads"
    UPLOAD_FINISHED = "upload_finished"
    NOT_UPLOADER = "not_uploader"  # 403: DELETE of an attachment another device uploaded
    # push (docs/protocol-relay.md, Push notifications)
    BAD_SUBSCRIPTION = "bad_subscription"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    PUSH_DISABLED = "push_disabled"


class CloseCode(IntEnum):
    """WebSocket close codes (``docs/protocol-ws.md`` §4.3)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006  # never sent: the connection dropped without a close frame
    POLICY = 1008
    TOO_LARGE = 1009
    KEEPALIVE_TIMEOUT = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_FRAME = 4400
    UNAUTHORIZED = 4401
    SLOW_CONSUMER = 4408
    REPLACED = 4409
    RATE_LIMITED = 4429

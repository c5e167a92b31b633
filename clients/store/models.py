"""Value types the store keeps. Secret fields never appear in ``repr``.

Key material and session state are opaque ``bytes`` here: :mod:`crypto` serializes them,
the store only keeps (and encrypts) them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "GONE_PREFIX",
    "Contact",
    "ConversationSummary",
    "DeliveryState",
    "Direction",
    "Group",
    "OutboxEntry",
    "PeerIdentity",
    "PrekeyKind",
    "PrekeyRecord",
    "Profile",
    "StoredMessage",
    "TrustState",
    "group_conversation",
    "is_group_conversation",
]

GROUP_PREFIX = "group:"
#: Seen-id prefix of a message removed from this device (:meth:`MessageStore.forget_message`).
GONE_PREFIX = "gone:"


def group_conversation(group_id: str) -> str:
    """The conversation key of a group (a direct conversation's key is the peer's username).

    Usernames match ``^[a-z0-9_.-]{3,32}$`` and never contain ``:``, so the two never clash.
    """
    return GROUP_PREFIX + group_id


def is_group_conversation(conversation: str) -> bool:
    """True for a key made by :func:`group_conversation`."""
    return conversation.startswith(GROUP_PREFIX)


@dataclass(frozen=True, slots=True)
class Profile:
    """This device's identity: who we are, where our relay is, and our private keys."""

    server_url: str
    username: str
    device_id: int
    account_key: bytes = field(repr=False)  # account Ed25519 private key (serialized by crypto)
    identity_key: bytes = field(repr=False)  # device X25519 identity private key
    auth_key: bytes = field(repr=False)  # device Ed25519 auth private key
    created_at: float = 0.0


class PrekeyKind(enum.StrEnum):
    """The kinds of prekey private parts a device keeps."""

    SIGNED = "signed"  # signed X25519 prekey (rotated; old ones kept for a grace period)
    LAST_RESORT_KEM = "last_resort_kem"  # signed last-resort ML-KEM-768 prekey
    ONE_TIME_X25519 = "one_time_x25519"  # deleted when consumed
    ONE_TIME_KEM = "one_time_kem"  # deleted when consumed


@dataclass(frozen=True, slots=True)
class PrekeyRecord:
    """A prekey's private part (opaque bytes) under its key id."""

    kind: PrekeyKind
    key_id: int
    secret: bytes = field(repr=False)
    created_at: float = 0.0


class TrustState(enum.StrEnum):
    """How far we trust a peer's account key."""

    TOFU = "tofu"  # trusted on first use
    VERIFIED = "verified"  # safety number compared out of band
    CHANGED = "changed"  # the key changed and the user has not acknowledged it: sending blocked


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What we know of another account: its key, our trust in it, its device list."""

    username: str
    account_key: bytes  # typed Ed25519 public key (0x02 || 32 bytes)
    trust: TrustState = TrustState.TOFU
    previous_account_key: bytes | None = None  # the key before a change (for the warning)
    device_list_version: int = 0
    device_list: bytes | None = None  # last verified signed device list (opaque)
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Contact:
    """An entry of the user's contact list."""

    username: str
    display_name: str = ""
    added_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Group:
    """A group: name and member usernames (our own sender key state is kept separately)."""

    group_id: str
    name: str
    members: tuple[str, ...]
    created_by: str = ""
    created_at: float = 0.0


class Direction(enum.StrEnum):
    """Whether we sent or received a message."""

    IN = "in"
    OUT = "out"


class DeliveryState(enum.StrEnum):
    """Where a message is. Outgoing: pending → sent → delivered → read (or failed).

    Incoming: received → read. :meth:`rank` orders them; the store only moves forward.
    """

    PENDING = "pending"
    FAILED = "failed"
    SENT = "sent"
    RECEIVED = "received"
    DELIVERED = "delivered"
    READ = "read"

    @property
    def rank(self) -> int:
        """Progress order; a state may only be replaced by one of higher rank."""
        return _RANK[self]


_RANK = {
    DeliveryState.PENDING: 0,
    DeliveryState.FAILED: 1,
    DeliveryState.SENT: 2,
    DeliveryState.RECEIVED: 2,
    DeliveryState.DELIVERED: 3,
    DeliveryState.READ: 4,
}


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of the history. ``text`` and ``attachment`` are encrypted at rest.

    ``attachment`` is the SDK's JSON-able metadata (name, size, mime, key, digest, blob id,
    local path...) — it contains the attachment key, hence secret.
    """

    message_id: str
    conversation: str  # peer username, or group_conversation(group_id)
    direction: Direction
    sender: str
    sender_device: int
    sent_at: float
    received_at: float
    text: str | None = field(default=None, repr=False)
    attachment: dict[str, object] | None = field(default=None, repr=False)
    state: DeliveryState = DeliveryState.RECEIVED
    #: Earlier texts of an edited message, oldest first (encrypted at rest).
    edits: tuple[str, ...] = field(default=(), repr=False)
    #: Deleted for everyone by its author: a tombstone (text and attachment are gone).
    deleted: bool = False
    #: The quoted message of a reply: (message id hex, author, excerpt) (encrypted at rest).
    reply: tuple[str, str, str] | None = field(default=None, repr=False)
    #: One reaction per person: ((username, emoji), ...) sorted by username (encrypted).
    reactions: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: Disappearing-messages timer this message was sent under (seconds; 0 = never).
    expires_in: int = 0
    #: When it disappears (Unix seconds): set when sent, or when read by this device.
    expire_at: float | None = None
    #: A notice row, not a message: ``sender`` set the conversation's disappearing timer to
    #: this many seconds (0 = off). ``text`` and ``attachment`` are then ``None``.
    timer: int | None = None

    @property
    def edited(self) -> bool:
        """True if the text was edited."""
        return bool(self.edits)


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """A row of the conversation list."""

    conversation: str
    last_at: float
    unread: int
    messages: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A send persisted before it goes out, so a retry reuses the same client message id."""

    message_id: str
    conversation: str
    payload: bytes = field(repr=False)  # SDK-encoded plaintext content
    created_at: float = 0.0
    attempts: int = 0

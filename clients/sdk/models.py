"""Public value types of the SDK: what :class:`~clients.sdk.VoxClient` returns and emits.

All are frozen, slotted dataclasses. Times are integer Unix **milliseconds** (UTC).
A *conversation* is either a username (direct chat) or ``"group:" + group_id_hex``
(a group; :func:`group_conversation`). :class:`DeliveryState` is the store's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clients.store.models import DeliveryState, group_conversation

__all__ = [
    "AttachmentInfo",
    "DecryptFailure",
    "DeliveryState",
    "DeviceInfo",
    "Event",
    "GroupChanged",
    "GroupInfo",
    "KeyChanged",
    "Message",
    "MessageSent",
    "MessageUpdate",
    "Operation",
    "ReceiptEvent",
    "ReplyRef",
    "SendFailed",
    "SendResult",
    "ServerConfig",
    "TypingEvent",
    "Verification",
    "Withdrawn",
    "group_conversation",
]


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A received (or sent) file. Download it with :meth:`VoxClient.download`."""

    file_name: str
    content_type: str
    size: int
    digest_hex: str
    pointer: bytes = field(repr=False)  # encoded crypto.attachments.AttachmentPointer
    path: Path | None = None  # where it was saved, once downloaded


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message (text or file), incoming or outgoing.

    ``id`` is the sender-chosen message id (32 hex digits), identical on every device of
    every participant; ``sender``/``device`` come from inside the ciphertext.
    """

    id: str
    conversation: str
    sender: str
    device: int
    sent_at: int
    received_at: int
    text: str | None = None
    attachment: AttachmentInfo | None = None
    group_id: str | None = None  # hex, for group messages
    outgoing: bool = False  # sent by this account (from this or another device)
    state: DeliveryState = DeliveryState.RECEIVED
    edited: bool = False  # the author edited the text (earlier texts: ``edits``)
    deleted: bool = False  # deleted for everyone by its author (a tombstone)
    reply_to: ReplyRef | None = None  # the quoted message, for a reply
    reactions: tuple[tuple[str, str], ...] = ()  # (username, emoji), one per person
    expires_in: int = 0  # disappearing timer (seconds) it was sent under; 0 = never
    edits: tuple[str, ...] = ()  # earlier texts, oldest first
    #: A notice, not a message: ``sender`` set the disappearing timer to this (0 = off).
    timer: int | None = None
    #: Our own edits, deletes and reactions of this message that the relay has not accepted,
    #: ``(kind, state)``: ``state`` ``"queued"`` (in the outbox, applied here already) or
    #: ``"failed"`` (refused for good: nobody else has it; see :class:`Operation`).
    unsent: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        """``"text"``, ``"attachment"`` or ``"timer"`` (a timer announcement)."""
        if self.timer is not None:
            return "timer"
        return "attachment" if self.attachment is not None else "text"

    def reaction_counts(self) -> dict[str, int]:
        """How many people reacted with each emoji."""
        counts: dict[str, int] = {}
        for _, emoji in self.reactions:
            counts[emoji] = counts.get(emoji, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class ReplyRef:
    """What a reply quotes: the message id (hex), its author and a short excerpt."""

    id: str
    author: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class MessageUpdate:
    """Someone changed a conversation: ``kind`` is ``"edit"`` (``text``), ``"delete"``,
    ``"reaction"`` (``emoji``; ``""`` = removed) on message ``target``, or ``"timer"``
    (``seconds``; 0 = off) for the conversation's disappearing messages; or ``"expired"``:
    message ``target`` (by ``sender``) disappeared from this device (its timer ran out)."""

    kind: str
    conversation: str
    target: str | None
    sender: str
    device: int
    at: int
    text: str | None = None
    emoji: str | None = None
    seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ReceiptEvent:
    """A delivery or read receipt from ``sender`` for ``message_ids`` (hex)."""

    sender: str
    device: int
    kind: DeliveryState
    message_ids: tuple[str, ...]
    at: int


@dataclass(frozen=True, slots=True)
class TypingEvent:
    """``sender`` started (``active``) or stopped typing in ``conversation``."""

    sender: str
    device: int
    conversation: str
    active: bool
    at: int


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """``username``'s account key changed; sending to them is blocked until accepted."""

    username: str
    safety_number: str
    at: int


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """A group was created or its membership changed (``by`` made the change)."""

    group_id: str
    name: str
    action: str  # "create" | "add" | "remove" | "leave"
    members: tuple[str, ...]
    by: str
    at: int


@dataclass(frozen=True, slots=True)
class DecryptFailure:
    """An envelope that could not be decrypted (acked so the queue moves on)."""

    sender: str
    device: int
    error: str  # the typed error's class name, never content
    envelope_id: str
    at: int


@dataclass(frozen=True, slots=True)
class SignedOut:
    """The relay refused to log this device in for good (``reason``: removed from the
    account, revoked, ...): the client stopped reconnecting; sends raise the same error."""

    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A message that was queued (:class:`~clients.sdk.errors.MessageQueued`) was accepted by
    the relay: its state is now ``sent``. For an operation (an edit, delete, reaction or timer
    change) ``message_id`` is the operation's id and ``target`` the message it changed."""

    message_id: str
    conversation: str
    at: int
    target: str | None = None


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A message or operation that had been queued was refused for good (``reason``): it
    reached no one. ``kind`` is ``text``, ``file``, ``edit``, ``delete``, ``reaction``,
    ``timer``, ``verify`` or ``unverify``; ``target`` the message an edit, delete or reaction
    changed. A message's state is now ``failed``; an operation's local effect stays, shown as
    not sent (:attr:`Message.unsent`, :meth:`VoxClient.operations`)."""

    message_id: str
    conversation: str
    kind: str
    target: str | None
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class Operation:
    """One of our operations the relay has not accepted (:meth:`VoxClient.operations`).

    ``kind``: ``edit``, ``delete``, ``reaction``, ``timer``, ``verify`` or ``unverify``;
    ``target``: the message an edit, delete or reaction changes (``None`` otherwise);
    ``conversation``: where it goes (for ``verify``/``unverify``: the user concerned — the
    sync goes to our own devices); ``state``: ``"queued"`` (kept in the outbox, sent in order
    when the relay takes it) or ``"failed"`` (refused for good: ``reason``; its local effect
    stays on this device, marked not sent). ``at``: when it was written (Unix ms)."""

    id: str
    kind: str
    conversation: str
    target: str | None
    state: str
    at: int
    reason: str = ""


Event = (
    Message
    | ReceiptEvent
    | TypingEvent
    | KeyChanged
    | GroupChanged
    | DecryptFailure
    | SignedOut
    | MessageSent
    | SendFailed
    | MessageUpdate
)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The relay accepted a message: its id (hex) and the relay's timestamp (ms)."""

    id: str
    accepted_at: int
    devices: int  # how many device copies the relay stored


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A delete of our own message still queued and never handed to the relay: the send was
    withdrawn (with the edits and reactions queued on it) — it reached no one. A withdrawn
    timer change is undone here too: ``timer`` is the conversation's timer on this device now
    (seconds, 0 = off; ``None`` for any other message)."""

    id: str
    timer: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device on this account's signed device list."""

    device_id: int
    identity_key_hex: str
    current: bool  # this device


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group this device knows: id (hex), name, members (usernames), epoch."""

    group_id: str
    name: str
    members: tuple[str, ...]
    epoch: int

    @property
    def conversation(self) -> str:
        """``"group:" + group_id``."""
        return group_conversation(self.group_id)


@dataclass(frozen=True, slots=True)
class Verification:
    """Safety number of us and ``username``, and the trust state of their account key."""

    username: str
    safety_number: str  # 60 digits in 12 groups of 5
    key_changed: bool  # a new key is pending acceptance
    verified: bool  # accepted explicitly with verify --accept


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The relay's ``/v1/config``: brand and limits, as served."""

    name: str
    primary_color: str
    accent_color: str
    background_color: str
    logo_url: str | None
    welcome_text: str
    registration: str
    limits: dict[str, float] = field(default_factory=dict)

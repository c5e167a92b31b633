"""What the SDK puts inside ciphertexts: the *content* format and the relay *payload* frame.

Both are sans-I/O value types with ``to_bytes``/``from_bytes`` built on
:mod:`crypto.encoding` (big-endian, length-prefixed, version byte first). Decoders raise only
:class:`crypto.errors.DecodeError` subclasses. The byte layout is specified in
``docs/protocol-client.md``; this docstring is the summary.

Relay payload (the opaque bytes in a WebSocket ``send``)::

    u8 version (1) || u8 kind || data
    kind 0x01 PAIRWISE  data = a crypto envelope (PQXDH initial or ratchet message);
                               its plaintext is crypto.envelope.Payload, whose body is a Content
    kind 0x02 GROUP     data = a crypto.sender_keys.SenderKeyMessage; plaintext is a Content
    kind 0x03 LINK      data = a device-link offer (see clients.sdk.linking)

Content (inside every plaintext)::

    u8 version (1) || u8 type || bytes16 message_id (16 bytes) || u64 sent_at_ms || body

    type 0x01 TEXT        bytes16 group_id (empty = direct) || bytes32 UTF-8 text (<= 64 KiB)
    type 0x02 ATTACHMENT  bytes16 group_id || bytes32 pointer (crypto AttachmentPointer)
                          || str16 caption
    type 0x03 RECEIPT     u8 kind (1 delivered, 2 read) || u16 n (<= 512) || n x bytes16 id
    type 0x04 TYPING      bytes16 group_id || u8 active (0/1)
    type 0x05 GROUP       bytes16 group_id || u64 epoch || str16 name || u8 action
                          || u16 n (<= 256) || n x str16 member username
                          (action 1 create, 2 add, 3 remove, 4 leave)
    type 0x06 SENDER_KEY  bytes16 group_id || bytes32 SenderKeyDistribution
    type 0x07 TRANSCRIPT  str16 destination username ("" for a group) || bytes32 inner Content
                          (what this account sent from another device: TEXT or ATTACHMENT)
    type 0x08 DEVICES     (empty) -- "my device list changed, refetch it" to own devices
    type 0x09 EDIT        bytes16 group_id || bytes16 target id (16) || bytes32 UTF-8 new text
    type 0x0A DELETE      bytes16 group_id || bytes16 target id (16)  -- delete for everyone
    type 0x0B REACTION    bytes16 group_id || bytes16 target id (16) || str16 emoji
                          (<= 32 bytes; "" removes the sender's reaction)
    type 0x0C TIMER       bytes16 group_id || u32 seconds (0 = off; else 30 .. 2419200)
    type 0x0D VERIFIED    str16 username || account key (typed: 0x02 || 32 bytes Ed25519)
                          || u8 state (1 verified) -- "I verified this user's key", sent to
                          our own devices only

TEXT and ATTACHMENT may end with *extensions*, each ``u8 tag || bytes16 value`` (unknown tags
are skipped)::

    tag 0x01 QUOTE   bytes16 quoted id (16) || str16 author || str16 excerpt (<= 200 bytes)
    tag 0x02 EXPIRE  u32 seconds -- the conversation's disappearing timer when it was sent

Contents 0x09..0x0C are *operations* on a conversation: sent like a text (pairwise, or under
the group's sender key, and to our own devices as a TRANSCRIPT).

Every content is **padded** before it is encrypted (pairwise and under sender keys), so the
relay learns a message's length only to within :data:`PAD_BLOCK` bytes::

    plaintext = Content || 0x80 || 0x00 ... (to the next multiple of PAD_BLOCK = 160 bytes)
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import ClassVar, Final

from crypto.encoding import Reader, Writer
from crypto.errors import InvalidValue
from crypto.keys import Ed25519PublicKey

__all__ = [
    "CONTENT_VERSION",
    "PAYLOAD_VERSION",
    "AttachmentContent",
    "Content",
    "ContentType",
    "DeleteContent",
    "DevicesChanged",
    "EditContent",
    "GroupAction",
    "GroupUpdate",
    "PayloadKind",
    "Quote",
    "ReactionContent",
    "Receipt",
    "ReceiptKind",
    "RelayPayload",
    "SenderKeyContent",
    "TextContent",
    "TimerContent",
    "Transcript",
    "Typing",
    "VerifiedContent",
    "VerifyState",
    "decode_content",
    "decode_padded",
    "new_message_id",
    "pad",
    "padded",
]

CONTENT_VERSION: Final = 1
PAYLOAD_VERSION: Final = 1
MESSAGE_ID_LEN: Final = 16
MAX_TEXT: Final = 64 * 1024
MAX_GROUP_ID: Final = 32
MAX_RECEIPT_IDS: Final = 512
MAX_MEMBERS: Final = 256
MAX_POINTER: Final = 4096
MAX_DISTRIBUTION: Final = 1024
MAX_INNER: Final = MAX_TEXT + 1024
#: Plaintexts are padded to a multiple of this many bytes (as Signal does).
PAD_BLOCK: Final = 160


def new_message_id() -> bytes:
    """A fresh random 16-byte message id."""
    return os.urandom(MESSAGE_ID_LEN)


class PayloadKind(enum.IntEnum):
    """The ``kind`` byte of a :class:`RelayPayload`."""

    PAIRWISE = 0x01
    GROUP = 0x02
    LINK = 0x03


@dataclass(frozen=True, slots=True)
class RelayPayload:
    """The opaque bytes the relay stores and delivers: ``u8 1 || u8 kind || data``."""

    kind: PayloadKind
    data: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """Encode."""
        return bytes((PAYLOAD_VERSION, int(self.kind))) + self.data

    @classmethod
    def from_bytes(cls, data: bytes) -> RelayPayload:
        """Decode; raises ``DecodeError`` on an unknown version or kind."""
        r = Reader(data)
        r.version(PAYLOAD_VERSION)
        raw_kind = r.u8()
        try:
            kind = PayloadKind(raw_kind)
        except ValueError:
            raise InvalidValue("payload kind", f"unknown kind {raw_kind:#04x}") from None
        return cls(kind, r.raw(r.remaining))


class ContentType(enum.IntEnum):
    """The ``type`` byte of a content."""

    TEXT = 0x01
    ATTACHMENT = 0x02
    RECEIPT = 0x03
    TYPING = 0x04
    GROUP = 0x05
    SENDER_KEY = 0x06
    TRANSCRIPT = 0x07
    DEVICES = 0x08
    EDIT = 0x09
    DELETE = 0x0A
    REACTION = 0x0B
    TIMER = 0x0C
    VERIFIED = 0x0D


class Extension(enum.IntEnum):
    """Tags of the optional extensions after a TEXT or ATTACHMENT body."""

    QUOTE = 0x01
    EXPIRE = 0x02


#: Disappearing-message timers: off (0) or between these bounds (seconds).
MIN_TIMER: Final = 30
MAX_TIMER: Final = 4 * 7 * 24 * 3600
MAX_EXCERPT: Final = 200
MAX_EMOJI: Final = 32


def check_timer(seconds: int) -> int:
    """``seconds`` if it is a valid timer (0 = off, or 30 s .. 4 weeks)."""
    if seconds != 0 and not MIN_TIMER <= seconds <= MAX_TIMER:
        raise InvalidValue("timer", f"0 or {MIN_TIMER}..{MAX_TIMER} seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class Quote:
    """What a reply quotes: the message id, its author and a short excerpt."""

    message_id: bytes
    author: str
    excerpt: str

    @staticmethod
    def excerpt_of(text: str) -> str:
        """At most :data:`MAX_EXCERPT` UTF-8 bytes of ``text`` (cut on a character)."""
        data = text.encode("utf-8")[:MAX_EXCERPT]
        return data.decode("utf-8", errors="ignore")


def _write_extensions(w: Writer, quote: Quote | None, expire: int) -> None:
    if quote is not None:
        if len(quote.message_id) != MESSAGE_ID_LEN:
            raise InvalidValue("quote", "the quoted id must be 16 bytes")
        if len(quote.excerpt.encode("utf-8")) > MAX_EXCERPT:
            raise InvalidValue("quote", f"excerpt longer than {MAX_EXCERPT} bytes")
        value = Writer().bytes16(quote.message_id).str16(quote.author).str16(quote.excerpt)
        w.u8(Extension.QUOTE).bytes16(value.finish())
    if expire:
        w.u8(Extension.EXPIRE).bytes16(Writer().u32(check_timer(expire)).finish())


def _read_extensions(r: Reader) -> tuple[Quote | None, int]:
    quote: Quote | None = None
    expire = 0
    while r.remaining:
        tag = r.u8()
        value = Reader(r.bytes16("extension", 4096))
        if tag == Extension.QUOTE:
            qid = value.bytes16("quoted id", MESSAGE_ID_LEN)
            if len(qid) != MESSAGE_ID_LEN:
                raise InvalidValue("quote", "the quoted id must be 16 bytes")
            quote = Quote(qid, value.str16("author", 32), value.str16("excerpt", MAX_EXCERPT))
            value.end()
        elif tag == Extension.EXPIRE:
            expire = check_timer(value.u32())
            value.end()
    return quote, expire


class ReceiptKind(enum.IntEnum):
    """Delivery or read receipt."""

    DELIVERED = 1
    READ = 2


class GroupAction(enum.IntEnum):
    """What a :class:`GroupUpdate` announces."""

    CREATE = 1
    ADD = 2
    REMOVE = 3
    LEAVE = 4


def _group_id(r: Reader) -> bytes:
    return r.bytes16("group_id", MAX_GROUP_ID)


def _utf8(field_name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(field_name, "not valid UTF-8") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    message_id: bytes = field(default_factory=new_message_id)
    sent_at_ms: int = 0
    TYPE: ClassVar[ContentType] = ContentType.TEXT

    def _head(self) -> Writer:
        if len(self.message_id) != MESSAGE_ID_LEN:
            raise InvalidValue("message_id", "must be 16 bytes")
        w = Writer().u8(CONTENT_VERSION).u8(int(self.TYPE)).bytes16(self.message_id)
        return w.u64(self.sent_at_ms)

    def _body(self, w: Writer) -> None:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Encode (see the module docstring)."""
        w = self._head()
        self._body(w)
        return w.finish()

    @property
    def id_hex(self) -> str:
        """The message id as 32 lowercase hex digits (what APIs and the CLI show)."""
        return self.message_id.hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class TextContent(_Base):
    """A text message, direct (``group_id == b""``) or to a group."""

    text: str
    group_id: bytes = b""
    quote: Quote | None = None
    expire: int = 0
    TYPE: ClassVar[ContentType] = ContentType.TEXT

    def _body(self, w: Writer) -> None:
        data = self.text.encode("utf-8")
        if len(data) > MAX_TEXT:
            raise InvalidValue("text", f"longer than {MAX_TEXT} bytes")
        w.bytes16(self.group_id).bytes32(data)
        _write_extensions(w, self.quote, self.expire)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachmentContent(_Base):
    """A file: the encoded :class:`crypto.attachments.AttachmentPointer` and a caption."""

    pointer: bytes = field(repr=False)
    caption: str = ""
    group_id: bytes = b""
    quote: Quote | None = None
    expire: int = 0
    TYPE: ClassVar[ContentType] = ContentType.ATTACHMENT

    def _body(self, w: Writer) -> None:
        w.bytes16(self.group_id).bytes32(self.pointer).str16(self.caption)
        _write_extensions(w, self.quote, self.expire)


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(_Base):
    """Delivery or read receipt for the listed message ids (never itself receipted)."""

    kind: ReceiptKind
    ids: tuple[bytes, ...]
    TYPE: ClassVar[ContentType] = ContentType.RECEIPT

    def _body(self, w: Writer) -> None:
        if len(self.ids) > MAX_RECEIPT_IDS:
            raise InvalidValue("ids", f"more than {MAX_RECEIPT_IDS}")
        w.u8(int(self.kind)).u16(len(self.ids))
        for message_id in self.ids:
            w.bytes16(message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing(_Base):
    """A typing indicator (sent as an ephemeral, never stored by the relay)."""

    active: bool
    group_id: bytes = b""
    TYPE: ClassVar[ContentType] = ContentType.TYPING

    def _body(self, w: Writer) -> None:
        w.bytes16(self.group_id).u8(int(self.active))


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupUpdate(_Base):
    """A membership change with the full new member list (usernames) and a new epoch."""

    group_id: bytes
    epoch: int
    name: str
    action: GroupAction
    members: tuple[str, ...]
    TYPE: ClassVar[ContentType] = ContentType.GROUP

    def _body(self, w: Writer) -> None:
        if len(self.members) > MAX_MEMBERS:
            raise InvalidValue("members", f"more than {MAX_MEMBERS}")
        w.bytes16(self.group_id).u64(self.epoch).str16(self.name).u8(int(self.action))
        w.u16(len(self.members))
        for member in self.members:
            w.str16(member)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderKeyContent(_Base):
    """A sender-key distribution (``crypto.sender_keys.SenderKeyDistribution`` bytes)."""

    group_id: bytes
    distribution: bytes = field(repr=False)
    TYPE: ClassVar[ContentType] = ContentType.SENDER_KEY

    def _body(self, w: Writer) -> None:
        w.bytes16(self.group_id).bytes32(self.distribution)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript(_Base):
    """A copy, for the sender's other devices, of what it sent (``inner`` is TEXT/ATTACHMENT)."""

    destination: str
    inner: ConversationContent
    TYPE: ClassVar[ContentType] = ContentType.TRANSCRIPT

    def _body(self, w: Writer) -> None:
        w.str16(self.destination).bytes32(self.inner.to_bytes())


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicesChanged(_Base):
    """Tells the account's other devices to refetch its device list."""

    TYPE: ClassVar[ContentType] = ContentType.DEVICES

    def _body(self, w: Writer) -> None:
        return None


def _target(w: Writer, group_id: bytes, target: bytes) -> Writer:
    if len(target) != MESSAGE_ID_LEN:
        raise InvalidValue("target", "must be 16 bytes")
    return w.bytes16(group_id).bytes16(target)


@dataclass(frozen=True, slots=True, kw_only=True)
class EditContent(_Base):
    """Replaces the text of our message ``target`` (only its author may edit it)."""

    target: bytes
    text: str
    group_id: bytes = b""
    TYPE: ClassVar[ContentType] = ContentType.EDIT

    def _body(self, w: Writer) -> None:
        data = self.text.encode("utf-8")
        if len(data) > MAX_TEXT:
            raise InvalidValue("text", f"longer than {MAX_TEXT} bytes")
        _target(w, self.group_id, self.target).bytes32(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteContent(_Base):
    """Deletes our message ``target`` for everyone (a tombstone replaces it)."""

    target: bytes
    group_id: bytes = b""
    TYPE: ClassVar[ContentType] = ContentType.DELETE

    def _body(self, w: Writer) -> None:
        _target(w, self.group_id, self.target)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionContent(_Base):
    """The sender's reaction to ``target`` (one per person; ``emoji == ""`` removes it)."""

    target: bytes
    emoji: str
    group_id: bytes = b""
    TYPE: ClassVar[ContentType] = ContentType.REACTION

    def _body(self, w: Writer) -> None:
        if len(self.emoji.encode("utf-8")) > MAX_EMOJI:
            raise InvalidValue("emoji", f"longer than {MAX_EMOJI} bytes")
        _target(w, self.group_id, self.target).str16(self.emoji)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerContent(_Base):
    """Sets the conversation's disappearing-messages timer (0 = off)."""

    seconds: int
    group_id: bytes = b""
    TYPE: ClassVar[ContentType] = ContentType.TIMER

    def _body(self, w: Writer) -> None:
        w.bytes16(self.group_id).u32(check_timer(self.seconds))


class VerifyState(enum.IntEnum):
    """The ``state`` byte of a :class:`VerifiedContent`."""

    VERIFIED = 1
    UNVERIFIED = 2  # the user cleared the verification ("unverify")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedContent(_Base):
    """To our own other devices: the user verified ``username``'s account key (compared
    the safety number and accepted it) on this device — or, with ``state``
    :attr:`VerifyState.UNVERIFIED`, cleared that verification. Believed only from our own
    account."""

    username: str
    account_key: bytes  # typed Ed25519 public key (0x02 || 32 bytes), as in device lists
    state: VerifyState = VerifyState.VERIFIED
    TYPE: ClassVar[ContentType] = ContentType.VERIFIED

    def _body(self, w: Writer) -> None:
        Ed25519PublicKey.from_bytes(self.account_key).write(w.str16(self.username))
        w.u8(int(self.state))


#: Operations on a conversation (not messages of their own).
OperationContent = EditContent | DeleteContent | ReactionContent | TimerContent
#: What a TRANSCRIPT or a group message may carry.
ConversationContent = TextContent | AttachmentContent | OperationContent

Content = (
    TextContent
    | AttachmentContent
    | Receipt
    | Typing
    | GroupUpdate
    | SenderKeyContent
    | Transcript
    | DevicesChanged
    | EditContent
    | DeleteContent
    | ReactionContent
    | TimerContent
    | VerifiedContent
)


def padded(content: Content) -> bytes:
    """The content's bytes padded for encryption: ``|| 0x80 || 0x00...`` to a multiple of
    :data:`PAD_BLOCK` (at least one byte of padding, so the marker is always there)."""
    return pad(content.to_bytes())


def pad(encoded: bytes) -> bytes:
    """:func:`padded` of a content already encoded (``content.to_bytes()``)."""
    data = encoded + b"\x80"
    return data + bytes(-len(data) % PAD_BLOCK)


def decode_padded(data: bytes) -> Content:
    """Inverse of :func:`padded`; raises only ``DecodeError`` subclasses."""
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80:
        raise InvalidValue("padding", "no 0x80 marker before the zero bytes")
    if len(data) - end >= PAD_BLOCK:
        raise InvalidValue("padding", f"longer than {PAD_BLOCK} bytes")
    return decode_content(data[: end - 1])


def decode_content(data: bytes) -> Content:
    """Decode one content; raises only ``DecodeError`` subclasses."""
    r = Reader(data)
    r.version(CONTENT_VERSION)
    raw_type = r.u8()
    message_id = r.bytes16("message_id", MESSAGE_ID_LEN)
    if len(message_id) != MESSAGE_ID_LEN:
        raise InvalidValue("message_id", "must be 16 bytes")
    sent_at = r.u64()
    head = {"message_id": message_id, "sent_at_ms": sent_at}
    out: Content
    if raw_type == ContentType.TEXT:
        group_id = _group_id(r)
        text = _utf8("text", r.bytes32("text", MAX_TEXT))
        quote, expire = _read_extensions(r)
        out = TextContent(text=text, group_id=group_id, quote=quote, expire=expire, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.ATTACHMENT:
        group_id = _group_id(r)
        pointer = r.bytes32("pointer", MAX_POINTER)
        caption = r.str16("caption", 4096)
        quote, expire = _read_extensions(r)
        out = AttachmentContent(
            pointer=pointer,
            caption=caption,
            group_id=group_id,
            quote=quote,
            expire=expire,
            **head,  # type: ignore[arg-type]
        )
    elif raw_type in (ContentType.EDIT, ContentType.DELETE, ContentType.REACTION):
        group_id = _group_id(r)
        target = r.bytes16("target", MESSAGE_ID_LEN)
        if len(target) != MESSAGE_ID_LEN:
            raise InvalidValue("target", "must be 16 bytes")
        if raw_type == ContentType.EDIT:
            text = _utf8("text", r.bytes32("text", MAX_TEXT))
            out = EditContent(target=target, text=text, group_id=group_id, **head)  # type: ignore[arg-type]
        elif raw_type == ContentType.DELETE:
            out = DeleteContent(target=target, group_id=group_id, **head)  # type: ignore[arg-type]
        else:
            emoji = r.str16("emoji", MAX_EMOJI)
            out = ReactionContent(target=target, emoji=emoji, group_id=group_id, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.TIMER:
        group_id = _group_id(r)
        seconds = check_timer(r.u32())
        out = TimerContent(seconds=seconds, group_id=group_id, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.RECEIPT:
        raw_kind = r.u8()
        if raw_kind not in (1, 2):
            raise InvalidValue("receipt kind", f"unknown kind {raw_kind}")
        n = r.count("ids", MAX_RECEIPT_IDS)
        ids = []
        for _ in range(n):
            one = r.bytes16("id", MESSAGE_ID_LEN)
            if len(one) != MESSAGE_ID_LEN:
                raise InvalidValue("id", "must be 16 bytes")
            ids.append(one)
        out = Receipt(kind=ReceiptKind(raw_kind), ids=tuple(ids), **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.TYPING:
        group_id = _group_id(r)
        out = Typing(active=r.flag("active"), group_id=group_id, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.GROUP:
        group_id = _group_id(r)
        if not group_id:
            raise InvalidValue("group_id", "must not be empty")
        epoch = r.u64()
        name = r.str16("name", 256)
        raw_action = r.u8()
        if raw_action not in (1, 2, 3, 4):
            raise InvalidValue("group action", f"unknown action {raw_action}")
        n = r.count("members", MAX_MEMBERS)
        members = tuple(r.str16("member", 32) for _ in range(n))
        out = GroupUpdate(
            group_id=group_id,
            epoch=epoch,
            name=name,
            action=GroupAction(raw_action),
            members=members,
            **head,  # type: ignore[arg-type]
        )
    elif raw_type == ContentType.SENDER_KEY:
        group_id = _group_id(r)
        distribution = r.bytes32("distribution", MAX_DISTRIBUTION)
        out = SenderKeyContent(group_id=group_id, distribution=distribution, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.TRANSCRIPT:
        destination = r.str16("destination", 32)
        inner = decode_content(r.bytes32("inner", MAX_INNER))
        if not isinstance(inner, ConversationContent):
            raise InvalidValue("inner", "a transcript carries a message or an operation")
        out = Transcript(destination=destination, inner=inner, **head)  # type: ignore[arg-type]
    elif raw_type == ContentType.DEVICES:
        out = DevicesChanged(**head)  # type: ignore[arg-type]
    elif raw_type == ContentType.VERIFIED:
        username = r.str16("username", 32)
        account_key = Ed25519PublicKey.read(r).to_bytes()
        raw_state = r.u8()
        if raw_state not in tuple(VerifyState):
            raise InvalidValue("verify state", f"unknown state {raw_state}")
        out = VerifiedContent(
            username=username, account_key=account_key, state=VerifyState(raw_state), **head,  # type: ignore[arg-type]
        )  # fmt: skip
    else:
        raise InvalidValue("content type", f"unknown type {raw_type:#04x}")
    r.end()
    return out

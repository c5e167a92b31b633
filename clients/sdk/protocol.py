"""The sans-I/O client protocol: encrypting sends, processing deliveries, keeping state.

:class:`ClientProtocol` never touches the network or the clock on its own (``now`` is a
parameter); it reads and writes the local :class:`~clients.store.base.Store` and returns
values: :class:`OutgoingSend` (what to put in a WebSocket ``send``), :class:`Received`
(events to show and follow-up :class:`Action` s such as delivery receipts), or
:class:`NeedDeviceList` when it must see a user's signed device list first. The asyncio
shell (:mod:`clients.sdk.client`) performs the I/O in between.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from clients.sdk import groupstate, message_rules, trust
from clients.sdk.content import (
    PAYLOAD_VERSION,
    AttachmentContent,
    Content,
    ConversationContent,
    DevicesChanged,
    GroupAction,
    GroupUpdate,
    OperationContent,
    PayloadKind,
    Receipt,
    ReceiptKind,
    RelayPayload,
    SenderKeyContent,
    TextContent,
    Transcript,
    Typing,
    VerifiedContent,
    VerifyState,
    decode_padded,
    pad,
    padded,
)
from clients.sdk.errors import ClientError, GroupError, UnknownUser
from clients.sdk.groups import GroupBook
from clients.sdk.identity import LocalIdentity
from clients.sdk.models import (
    AttachmentInfo,
    DecryptFailure,
    Event,
    GroupChanged,
    Message,
    ReceiptEvent,
    ReplyRef,
    TypingEvent,
)
from clients.sdk.sessions import SessionBook
from clients.store.base import Store
from clients.store.models import (
    GROUP_PREFIX,
    DeliveryState,
    Direction,
    StoredMessage,
    group_conversation,
)
from crypto.attachments import AttachmentPointer
from crypto.device_list import DeviceList
from crypto.envelope import KIND_INITIAL, InitialMessage, decode_message
from crypto.errors import UnknownDevice, UnknownSenderKey, VoxError
from crypto.keys import (
    DeviceAddress,
    Ed25519PublicKey,
    KemPrekeyPublic,
    MlKem768PublicKey,
    OneTimePrekeyPublic,
    PrekeyBundle,
    SignedPrekeyPublic,
    X25519PublicKey,
)
from crypto.sender_keys import SenderKeyDistribution, SenderKeyMessage
from wire.encoding import USERNAME_PATTERN

__all__ = [
    "Action",
    "ClientProtocol",
    "DeviceBundle",
    "Envelope",
    "NeedDeviceList",
    "OutgoingSend",
    "Received",
    "SendReceipt",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One ``deliver`` frame. ``sender_*`` are the relay's claim, checked against the ciphertext."""

    seq: int
    envelope_id: str
    sender_user: str
    sender_device: int
    ts: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class OutgoingSend:
    """A WebSocket ``send``: client id, payloads each addressed to devices, ephemeral flag.

    ``accepted`` (if set) is called, inside a store transaction, once the relay accepted the
    send: state that must only be recorded for a send that really went out (which devices
    hold our sender key).
    """

    client_id: str
    payloads: list[tuple[bytes, list[Address]]]
    ephemeral: bool = False
    accepted: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    #: Relay lifetime cap (seconds): the disappearing timer a message was sent under.
    ttl: int | None = None

    @property
    def device_count(self) -> int:
        """Number of device copies."""
        return sum(len(to) for _, to in self.payloads)


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """Follow-up: send a receipt to ``to`` for ``ids`` (hex)."""

    to: str
    kind: ReceiptKind
    ids: tuple[bytes, ...]


Action = SendReceipt


@dataclass(frozen=True, slots=True)
class Received:
    """What processing one envelope produced."""

    events: list[Event]
    actions: list[Action]


@dataclass(frozen=True, slots=True)
class _Chat:
    """A received chat message to store: a burst stores its consecutive ones together
    (:meth:`ClientProtocol.receive_all`)."""

    stored: StoredMessage
    receipt: SendReceipt | None


@dataclass(frozen=True, slots=True)
class NeedDeviceList:
    """The protocol must see ``username``'s device list (fetch it, then retry)."""

    username: str


@dataclass(frozen=True, slots=True)
class DeviceBundle:
    """One device's prekey bundle as the relay serves it (typed key encodings)."""

    device_id: int
    identity_key: bytes
    signed_prekey: tuple[int, bytes, bytes]  # key_id, typed public key, signature
    last_resort_prekey: tuple[int, bytes, bytes]
    one_time_prekey: tuple[int, bytes] | None
    one_time_pq_prekey: tuple[int, bytes, bytes] | None


def _ttl(content: Content) -> int | None:
    """The relay lifetime cap of a send: the disappearing timer of a message sent under one
    (``docs/protocol-ws.md`` §3.1 ``ttl``)."""
    if isinstance(content, TextContent | AttachmentContent) and content.expire:
        return content.expire
    return None


def _ms(now: float) -> int:
    return int(now * 1000)


_KINDS: Final = frozenset(int(kind) for kind in PayloadKind)
_INITIAL_KIND: Final = bytes((KIND_INITIAL,))
_GROUP_PREFIX_LEN: Final = len(GROUP_PREFIX)


def _payload(data: bytes) -> tuple[int, bytes]:
    """``(kind, data)`` of a :class:`RelayPayload` (``u8 1 || u8 kind || data``) without
    building one; raises what :meth:`RelayPayload.from_bytes` raises."""
    if len(data) >= 2 and data[0] == PAYLOAD_VERSION and data[1] in _KINDS:
        return data[1], data[2:]
    payload = RelayPayload.from_bytes(data)  # raises the precise error
    return payload.kind, payload.data  # pragma: no cover (a well-formed one is taken above)


def _is_chat(content: Content) -> bool:
    """Whether ``content`` is a chat message (a text or a file, or our own in a transcript):
    it is only stored, and reads no other message."""
    inner = content.inner if isinstance(content, Transcript) else content
    return isinstance(inner, TextContent | AttachmentContent)


def _failure(envelope: Envelope, error: Exception, now: float) -> DecryptFailure:
    """The event of an envelope that could not be processed (metadata only)."""
    return DecryptFailure(
        envelope.sender_user,
        envelope.sender_device,
        type(error).__name__,
        envelope.envelope_id,
        _ms(now),
    )


class ClientProtocol:
    """Sessions, device lists, groups and content processing for one device."""

    #: A group message makes :meth:`precheck` ask for its sender's device list when the one
    #: we hold was verified longer ago than this (seconds), so that a removed device stops
    #: being believed within about this long, even by a device that only receives.
    sender_list_ttl: float = 60.0

    def __init__(
        self, store: Store, identity: LocalIdentity, *, now: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.identity = identity
        self.sessions = SessionBook(store, identity)
        self.groups = GroupBook(store, identity.address)
        self._now = now

    @property
    def username(self) -> str:
        """Our username."""
        return self.identity.username

    # --- device lists and sessions -----------------------------------------------------

    def device_list(self, username: str) -> DeviceList | None:
        """The last verified list of ``username`` (ours included)."""
        return trust.known_device_list(self.store, username)

    def accept_device_list(self, username: str, account_key: bytes, signed: bytes) -> DeviceList:
        """Verify a list the relay served (TOFU, rollback); drop sessions of removed devices."""
        return self.accept_device_list_changed(username, account_key, signed)[0]

    def accept_device_list_changed(
        self, username: str, account_key: bytes, signed: bytes
    ) -> tuple[DeviceList, bool]:
        """Like :meth:`accept_device_list`; also says whether the account key just changed."""
        with self.store.transaction():
            device_list, changed = trust.accept_device_list(
                self.store, username, account_key, signed, now=self._now()
            )
            current = {d.device_id: d for d in device_list.devices}
            for device_id in self.store.session_devices(username):
                entry = current.get(device_id)
                peer = self.sessions.peer(username, device_id)
                if (
                    entry is None
                    or peer is None
                    or peer.identity_key != entry.identity_key
                    or peer.account_key.to_bytes() != account_key
                ):
                    self.sessions.drop(username, device_id)
            # Sender-key states of devices that left the list go too (a group message from
            # such a device is refused anyway: see ``_receive``).
            self.store.prune_device_sender_keys(username, device_list.device_ids)
        return device_list, changed

    def recipient_devices(self, username: str) -> list[Address]:
        """Devices to encrypt to for ``username`` (ours: every device but this one)."""
        device_list = self.device_list(username)
        if device_list is None:
            raise UnknownUser(username)
        return [
            (username, d)
            for d in device_list.device_ids
            if (username, d) != (self.username, self.identity.device_id)
        ]

    def missing_sessions(self, usernames: Iterable[str]) -> dict[str, list[int]]:
        """Per user, the listed devices we have no session with."""
        out: dict[str, list[int]] = {}
        for username in usernames:
            missing = [
                d
                for u, d in self.recipient_devices(username)
                if not self.sessions.has_session(u, d)
            ]
            if missing:
                out[username] = missing
        return out

    def accept_bundle(self, username: str, account_key: bytes, device: DeviceBundle) -> None:
        """Start a session from a served bundle after checking it against the verified list."""
        device_list = self.device_list(username)
        if device_list is None:
            raise UnknownUser(username)
        identity = X25519PublicKey.from_bytes(device.identity_key)
        device_list.check_device(device.device_id, identity)
        peer = self.store.get_peer(username)
        if peer is None or peer.account_key != account_key:
            raise UnknownDevice(device.device_id)
        kem_source = device.one_time_pq_prekey or device.last_resort_prekey
        kem = KemPrekeyPublic(
            kem_source[0],
            MlKem768PublicKey.from_bytes(kem_source[1]),
            device.one_time_pq_prekey is None,
            kem_source[2],
        )
        one_time = None
        if device.one_time_prekey is not None:
            one_time = OneTimePrekeyPublic(
                device.one_time_prekey[0], X25519PublicKey.from_bytes(device.one_time_prekey[1])
            )
        spk = device.signed_prekey
        bundle = PrekeyBundle(
            DeviceAddress(username, device.device_id),
            Ed25519PublicKey.from_bytes(account_key),
            identity,
            SignedPrekeyPublic(spk[0], X25519PublicKey.from_bytes(spk[1]), spk[2]),
            kem,
            one_time,
        )
        bundle.verify()
        self.sessions.start(bundle)

    # --- outgoing ----------------------------------------------------------------------

    def _pairwise(
        self, devices: list[Address], content: Content, encoded: bytes | None = None
    ) -> list[tuple[bytes, list[Address]]]:
        body = padded(content) if encoded is None else pad(encoded)
        out = []
        for username, device_id in devices:
            ciphertext = self.sessions.encrypt(username, device_id, body)
            out.append(
                (RelayPayload(PayloadKind.PAIRWISE, ciphertext).to_bytes(), [(username, device_id)])
            )
        return out

    def encode_direct(
        self,
        to: str | Iterable[str],
        content: Content,
        *,
        ephemeral: bool = False,
        encoded: bytes | None = None,
    ) -> OutgoingSend:
        """Encrypt ``content`` for every device of the user(s) ``to`` and for our other
        devices (texts and files as a :class:`Transcript`), in one send with one client id.
        Requires sessions with all of them. ``encoded``: ``content.to_bytes()`` if the caller
        has it already (the outbox entry's payload), so it is not encoded again."""
        users = [to] if isinstance(to, str) else sorted(set(to))
        for user in users:
            if user != self.username:
                self._require_trusted(user)
        with self.store.transaction():
            devices: list[Address] = []
            for user in users:
                devices += [d for d in self.recipient_devices(user) if d not in devices]
            payloads = self._pairwise(devices, content, encoded)
            own = (
                [] if ephemeral or self.username in users else self.recipient_devices(self.username)
            )
            if own:  # our other devices (none on a single-device account: no copy to encode)
                copy: Content = content
                if isinstance(content, ConversationContent):
                    copy = Transcript(
                        destination=users[0],
                        inner=content,
                        message_id=content.message_id,
                        sent_at_ms=content.sent_at_ms,
                    )
                payloads += self._pairwise(own, copy)
        return OutgoingSend(content.message_id.hex(), payloads, ephemeral, ttl=_ttl(content))

    def _require_trusted(self, username: str) -> None:
        trust.require_trusted(self.store, username)

    def group_devices(self, group_id: bytes) -> list[Address]:
        """Every member device of a group except this one."""
        group = self.groups.get(group_id)
        if group is None:
            raise GroupError(f"unknown group {group_id.hex()}")
        devices: list[Address] = []
        for member in sorted(set(group.members) | {self.username}):
            devices += self.recipient_devices(member)
        return devices

    def encode_group(self, group_id: bytes, content: Content) -> list[OutgoingSend]:
        """Sender-key distributions still needed (pairwise), then the group message itself."""
        group = self.groups.get(group_id)
        if group is None or self.username not in group.members:
            raise GroupError(f"not a member of group {group_id.hex()}")
        for member in group.members:
            if member != self.username:
                self._require_trusted(member)
        devices = self.group_devices(group_id)
        sends: list[OutgoingSend] = []
        with self.store.transaction():
            state = self.groups.own_key(group_id)
            plan = groupstate.distribution(
                self.username, devices, self.groups.distributed(group_id, state.key_id)
            )
            if plan.rotate:  # a device holding our key is gone: a new key for the others
                self.groups.rotate(group_id)
                state = self.groups.own_key(group_id)
            if plan.targets:
                targets = list(plan.targets)
                skd = SenderKeyContent(
                    group_id=group_id,
                    distribution=state.distribution().to_bytes(),
                    sent_at_ms=_ms(self._now()),
                )
                key_id, devices_sent = state.key_id, set(targets)

                def distributed() -> None:
                    self.groups.mark_distributed(group_id, key_id, devices_sent)

                # Marked only once the relay accepted the distribution: if the connection drops
                # first, the retried send distributes the key again (receivers ignore repeats).
                sends.append(
                    OutgoingSend(
                        skd.message_id.hex(), self._pairwise(targets, skd), False, distributed
                    )
                )
            message = state.encrypt(padded(content))
            self.groups.save_own_key(group_id, state)
        if devices:
            payload = RelayPayload(PayloadKind.GROUP, message.to_bytes()).to_bytes()
            sends.append(
                OutgoingSend(content.message_id.hex(), [(payload, devices)], ttl=_ttl(content))
            )
        return sends

    def record_outgoing(self, conversation: str, content: TextContent | AttachmentContent) -> None:
        """Store our own message in the history as pending."""
        self.store.add_message(self._stored(conversation, content, self.identity.address, True))

    def record_outgoing_all(
        self, messages: Sequence[tuple[str, TextContent | AttachmentContent]]
    ) -> None:
        """:meth:`record_outgoing` for each ``(conversation, content)`` in order, at once (one
        statement in the SQLite store: a burst of sends)."""
        if len(messages) == 1:
            self.record_outgoing(*messages[0])
            return
        address = self.identity.address
        rows = [self._stored(c, content, address, True) for c, content in messages]
        self.store.add_messages(rows)

    def mark_sent(self, message_ids: list[str]) -> None:
        """The relay accepted these sends (one statement for all, usually)."""
        self.store.update_message_states(message_ids, DeliveryState.SENT)

    # --- incoming ----------------------------------------------------------------------

    def precheck(self, envelope: Envelope) -> NeedDeviceList | None:
        """Before :meth:`receive`: do we know the claimed sender device's list?"""
        try:
            kind, data = _payload(envelope.data)
        except VoxError:
            return None
        if kind == PayloadKind.GROUP:
            return self._precheck_group(data)
        if kind != PayloadKind.PAIRWISE:
            return None
        known = self.device_list(envelope.sender_user)
        if known is None or envelope.sender_device not in known.device_ids:
            return NeedDeviceList(envelope.sender_user)
        # A new session from keys our verified list does not hold: the user may have
        # re-registered (a changed account key) or replaced the device since we last looked.
        if data[1:2] != _INITIAL_KIND:  # most messages: no parse needed
            return None
        try:
            message = decode_message(data)
        except VoxError:
            return None
        if isinstance(message, InitialMessage):
            prefix = message.prefix
            peer = self.store.get_peer(envelope.sender_user)
            listed = next(d for d in known.devices if d.device_id == envelope.sender_device)
            if (
                peer is None
                or peer.account_key != prefix.account_key.to_bytes()
                or listed.identity_key.to_bytes() != prefix.identity_key.to_bytes()
            ):
                return NeedDeviceList(envelope.sender_user)
        return None

    def _precheck_group(self, data: bytes) -> NeedDeviceList | None:
        """A group message is believed only from a device on its sender's current list: fetch
        the list if the device is not on ours (a new device), or if ours was verified more than
        :attr:`sender_list_ttl` seconds ago (the device may have been removed since)."""
        try:
            sender = SenderKeyMessage.from_bytes(data).sender
        except VoxError:
            return None
        known = self.device_list(sender.username)
        peer = self.store.get_peer(sender.username)
        if (
            known is None
            or peer is None
            or sender.device_id not in known.device_ids
            or peer.updated_at < self._now() - self.sender_list_ttl
        ):
            return NeedDeviceList(sender.username)
        return None

    def receive(self, envelope: Envelope) -> Received:
        """Decrypt and process one envelope; never raises for bad input.

        A duplicate (already seen envelope) yields nothing; a failure yields one
        :class:`DecryptFailure` event. Either way the caller acks the envelope.
        """
        now = self._now()
        seen = "env:" + envelope.envelope_id
        try:
            with self.store.transaction():
                if not self.store.mark_seen(seen, now):  # one statement: new, or a duplicate
                    return Received([], [])
                result = self._receive(envelope, now)
                if isinstance(result, _Chat):
                    added = self.store.add_message(result.stored)
                    result = self._chat_received(result, now) if added else Received([], [])
            return result
        except (VoxError, ClientError, ValueError) as exc:
            with self.store.transaction():  # rolled back with the rest unless in a burst's
                self.store.mark_seen(seen, now)
            return Received([_failure(envelope, exc, now)], [])

    def receive_all(self, envelopes: Sequence[Envelope]) -> list[Received]:
        """:meth:`receive` for a burst, in order, in one store transaction whose ids are all
        marked seen by one statement first (a duplicate, also within the burst, yields
        nothing); the sessions they advance are written once, at its end, and its chat
        messages are stored together (:meth:`~clients.store.base.Store.add_messages`) before
        any other content is applied, and at its end. Raises only what the store raises
        (the transaction is then rolled back)."""
        now = self._now()
        keys = ["env:" + e.envelope_id for e in envelopes]
        out: list[Received] = []
        waiting: list[tuple[int, Envelope, _Chat]] = []  # chats to store, by index in out

        def store_waiting() -> None:
            if not waiting:
                return
            chats = waiting[:]
            waiting.clear()
            added = self.store.add_messages([chat.stored for _, _, chat in chats])
            for (i, envelope, chat), new_one in zip(chats, added, strict=True):
                if new_one:
                    try:
                        out[i] = self._chat_received(chat, now)
                    except (VoxError, ClientError, ValueError) as exc:
                        out[i] = Received([_failure(envelope, exc, now)], [])

        with self.store.transaction(), self.sessions.deferred():
            new = self.store.mark_seen_many(keys, now)
            for envelope, key in zip(envelopes, keys, strict=True):
                out.append(Received([], []))
                if key not in new:
                    continue
                new.discard(key)  # a second copy in this burst is a duplicate
                try:
                    result = self._receive(envelope, now, store_waiting)
                except (VoxError, ClientError, ValueError) as exc:  # acked, marked seen
                    result = Received([_failure(envelope, exc, now)], [])
                if isinstance(result, _Chat):
                    waiting.append((len(out) - 1, envelope, result))
                else:
                    out[-1] = result
            store_waiting()
        return out

    def _receive(
        self, envelope: Envelope, now: float, store_waiting: Callable[[], None] | None = None
    ) -> Received | _Chat:
        """Process one envelope; a chat message comes back as a :class:`_Chat` to store.
        ``store_waiting`` stores the chats of the burst before any other content is applied
        (it may read or change them)."""
        # Everything that can fail for bad input is checked before the first write, so a
        # failed envelope leaves no trace but its "seen" mark (several envelopes may share
        # one store transaction).
        kind, data = _payload(envelope.data)
        if kind == PayloadKind.PAIRWISE:
            decrypted = self.sessions.decrypt(
                envelope.sender_user, envelope.sender_device, data, now=now
            )
            sender = decrypted.peer.address
            device_list = self.device_list(sender.username)
            if device_list is None:
                raise UnknownDevice(sender.device_id)
            device_list.check_device(sender.device_id, decrypted.peer.identity_key)
            peer = self.store.get_peer(sender.username)
            if peer is None or peer.account_key != decrypted.peer.account_key.to_bytes():
                raise UnknownDevice(sender.device_id)
            content = decode_padded(decrypted.body)
            self._check_pairwise(sender, content)
            decrypted.commit()
            if store_waiting is not None and not _is_chat(content):
                store_waiting()
            return self._pairwise_content(sender, content, now)
        if kind == PayloadKind.GROUP:
            message = SenderKeyMessage.from_bytes(data)
            listed = self.device_list(message.sender.username)
            if listed is None or message.sender.device_id not in listed.device_ids:
                # Its key may still be held (a message in flight, a record not yet pruned): a
                # device off its account's signed list is never believed.
                raise UnknownDevice(message.sender.device_id)
            record = self.groups.record(message.group_id, message.sender)
            if record is None:
                raise UnknownSenderKey(message.key_id)
            body = record.decrypt(message, now=now)
            content = decode_padded(body)
            if not isinstance(content, ConversationContent):
                raise GroupError("a group message carries a message or an operation")
            if content.group_id != message.group_id:
                raise GroupError("group message for another group")
            group = self.groups.get(message.group_id)
            if group is None or message.sender.username not in group.members:
                raise GroupError("group message from a non-member")
            if isinstance(content, AttachmentContent):
                AttachmentPointer.from_bytes(content.pointer)
            self.groups.save_record(message.group_id, message.sender, record)
            if store_waiting is not None and not _is_chat(content):
                store_waiting()
            conversation = group_conversation(message.group_id.hex())
            if isinstance(content, OperationContent):
                ops = message_rules.apply(
                    self.store, conversation, message.sender, content, now, own=self.username
                )
                return Received(list(ops), [])
            return self._chat(message.sender, content, conversation, now)
        raise GroupError("link offers are only read while joining")

    def _check_pairwise(self, sender: DeviceAddress, content: Content) -> None:
        """Refuse pairwise contents that are not acceptable from ``sender`` (before writing)."""
        own = sender.username == self.username
        if isinstance(content, ConversationContent) and content.group_id:
            raise GroupError("group messages travel under sender keys")
        if isinstance(content, Transcript) and not own:
            raise GroupError("transcripts come only from our own devices")
        if isinstance(content, VerifiedContent) and not own:
            raise GroupError("verification syncs come only from our own devices")
        inner = content.inner if isinstance(content, Transcript) else content
        if isinstance(inner, AttachmentContent):
            AttachmentPointer.from_bytes(inner.pointer)
        if isinstance(content, GroupUpdate):
            groupstate.check_sender(self.groups.state(content.group_id), sender.username)
        if isinstance(content, SenderKeyContent):
            distribution = SenderKeyDistribution.from_bytes(content.distribution)
            if distribution.sender != sender or distribution.group_id != content.group_id:
                raise GroupError("sender key distribution for another sender or group")

    def _pairwise_content(
        self, sender: DeviceAddress, content: Content, now: float
    ) -> Received | _Chat:
        own = sender.username == self.username
        if isinstance(content, TextContent | AttachmentContent):
            if content.group_id:
                raise GroupError("group messages travel under sender keys")
            return self._chat(sender, content, sender.username, now)
        if isinstance(content, OperationContent):
            ops = message_rules.apply(
                self.store, sender.username, sender, content, now, own=self.username
            )
            return Received(list(ops), [])
        if isinstance(content, Transcript):
            if not own:
                raise GroupError("transcripts come only from our own devices")
            inner = content.inner
            if isinstance(inner, OperationContent):
                conversation = (
                    group_conversation(inner.group_id.hex())
                    if inner.group_id
                    else content.destination
                )
                ops = message_rules.apply(
                    self.store, conversation, sender, inner, now, own=self.username
                )
                return Received(list(ops), [])
            return self._chat(sender, inner, content.destination, now)
        if isinstance(content, Receipt):
            return self._receipt(sender, content, now)
        if isinstance(content, Typing):
            conversation = (
                group_conversation(content.group_id.hex()) if content.group_id else sender.username
            )
            event = TypingEvent(
                sender.username, sender.device_id, conversation, content.active, _ms(now)
            )
            return Received([event], [])
        if isinstance(content, GroupUpdate):
            return self._group_update(sender, content, now)
        if isinstance(content, SenderKeyContent):
            distribution = SenderKeyDistribution.from_bytes(content.distribution)
            if distribution.sender != sender or distribution.group_id != content.group_id:
                raise GroupError("sender key distribution for another sender or group")
            self.groups.add_distribution(distribution)
            return Received([], [])
        if isinstance(content, DevicesChanged):
            return Received([], [])
        if isinstance(content, VerifiedContent):
            if not own:
                raise GroupError("verification syncs come only from our own devices")
            if content.username != self.username and re.fullmatch(
                USERNAME_PATTERN, content.username
            ):
                verified = content.state is VerifyState.VERIFIED
                trust.apply_verified(
                    self.store, content.username, content.account_key, verified=verified
                )
            return Received([], [])
        raise GroupError("unexpected content")

    def _stored(
        self,
        conversation: str,
        content: TextContent | AttachmentContent,
        sender: DeviceAddress,
        outgoing: bool,
        now: float | None = None,
        state: DeliveryState | None = None,
    ) -> StoredMessage:
        """The history row of ``content``: ``state`` (default: pending if ``outgoing``,
        else received)."""
        attachment: dict[str, object] | None = None
        text: str | None = None
        if isinstance(content, TextContent):
            text = content.text
        else:
            pointer = AttachmentPointer.from_bytes(content.pointer)
            attachment = {
                "pointer": content.pointer.hex(),
                "file_name": pointer.file_name,
                "content_type": pointer.content_type,
                "size": pointer.size,
                "digest": pointer.digest.hex(),
                "caption": content.caption,
            }
        when = self._now() if now is None else now
        quote = content.quote
        return message_rules.stored_message(
            content,
            conversation,
            sender,
            outgoing,
            when,
            (DeliveryState.PENDING if outgoing else DeliveryState.RECEIVED)
            if state is None
            else state,
            text=text,
            attachment=attachment,
            reply=None if quote is None else (quote.message_id.hex(), quote.author, quote.excerpt),
            expires_in=content.expire,
            # Ours disappear that long after they were sent; theirs after we read them.
            expire_at=content.sent_at_ms / 1000 + content.expire
            if outgoing and content.expire
            else None,
        )

    def _chat(
        self,
        sender: DeviceAddress,
        content: TextContent | AttachmentContent,
        conversation: str,
        now: float,
    ) -> Received | _Chat:
        if self.store.is_gone(content.message_id.hex()):
            # Deleted for me (or disappeared) here: a copy that comes again (the sender's
            # resend under a new client id, a transcript) stays gone, and gets no receipt.
            return Received([], [])
        outgoing = sender.username == self.username
        # Sent by another of our devices: the relay accepted it already.
        state = DeliveryState.SENT if outgoing else DeliveryState.RECEIVED
        stored = self._stored(conversation, content, sender, outgoing, now, state)
        receipt = (
            None
            if outgoing
            else SendReceipt(sender.username, ReceiptKind.DELIVERED, (content.message_id,))
        )
        return _Chat(stored, receipt)

    def _chat_received(self, chat: _Chat, now: float) -> Received:
        """What a chat message yields once stored (it was new)."""
        stored = chat.stored
        events: list[Event] = [message_from_stored(stored)]
        events += message_rules.on_stored(self.store, stored.message_id, now)
        return Received(events, [] if chat.receipt is None else [chat.receipt])

    def _receipt(self, sender: DeviceAddress, content: Receipt, now: float) -> Received:
        state = (
            DeliveryState.DELIVERED if content.kind is ReceiptKind.DELIVERED else DeliveryState.READ
        )
        ids = tuple(i.hex() for i in content.ids)
        # One statement for the receipt's ids: only our own messages move forward.
        self.store.update_message_states(ids, state, direction=Direction.OUT)
        event = ReceiptEvent(sender.username, sender.device_id, state, ids, _ms(now))
        return Received([event], [])

    def _group_update(self, sender: DeviceAddress, update: GroupUpdate, now: float) -> Received:
        state = self.groups.state(update.group_id)
        transition = groupstate.receive(self.username, state, sender.username, update)
        if transition is None:
            return Received([], [])
        self.groups.apply(transition, sender.username, now)
        t = transition
        by, at = sender.username, _ms(now)
        event = GroupChanged(t.group_id.hex(), t.name, t.action.name.lower(), t.members, by, at)
        return Received([event], [])

    # --- groups (local side) -----------------------------------------------------------

    def apply_group_change(self, transition: groupstate.Transition) -> GroupUpdate:
        """Apply our own membership change (:mod:`clients.sdk.groupstate`) and return the
        update to send."""
        now = self._now()
        with self.store.transaction():
            self.groups.apply(transition, self.username, now)
        return transition.update(_ms(now))

    def group_update(
        self, group_id: bytes, name: str, members: tuple[str, ...], action: GroupAction
    ) -> GroupUpdate:
        """Apply a membership change (the full new member list) locally and return the update
        to send."""
        before = self.groups.state(group_id)
        change = groupstate.change(self.username, group_id, before, name, members, action)
        return self.apply_group_change(change)


def message_from_stored(stored: StoredMessage) -> Message:
    """The public :class:`Message` for a history row."""
    attachment = None
    if stored.attachment is not None:
        a = stored.attachment
        path = a.get("path")
        attachment = AttachmentInfo(
            file_name=str(a["file_name"]),
            content_type=str(a["content_type"]),
            size=int(str(a["size"])),
            digest_hex=str(a["digest"]),
            pointer=bytes.fromhex(str(a["pointer"])),
            path=Path(str(path)) if path else None,
        )
    conversation = stored.conversation
    group_id = conversation[_GROUP_PREFIX_LEN:] if conversation.startswith(GROUP_PREFIX) else None
    reply = stored.reply
    edits = stored.edits
    # Positional, in Message's field order (a message is built for every one received).
    return Message(
        stored.message_id,
        conversation,
        stored.sender,
        stored.sender_device,
        int(stored.sent_at * 1000),
        int(stored.received_at * 1000),
        stored.text,
        attachment,
        group_id,
        stored.direction is Direction.OUT,
        stored.state,
        bool(edits),
        stored.deleted,
        None if reply is None else ReplyRef(*reply),
        stored.reactions,
        stored.expires_in,
        edits,
        stored.timer,
    )

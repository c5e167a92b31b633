"""Chat messages over :class:`~clients.sdk.core.Core`: texts, typing, read receipts, and the
outbox that makes every conversation message (texts, files, edits, deletes, reactions, timer
changes) survive a failed send (sent again, same id, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from clients.sdk import group_admin, message_rules, peers, trust
from clients.sdk.content import (
    CONTENT_VERSION,
    AttachmentContent,
    Content,
    ContentType,
    ConversationContent,
    DeleteContent,
    EditContent,
    ReactionContent,
    Receipt,
    ReceiptKind,
    TextContent,
    TimerContent,
    Typing,
    VerifiedContent,
    VerifyState,
    decode_content,
    new_message_id,
)
from clients.sdk.core import Core
from clients.sdk.engine import RECEIPT_CHUNK
from clients.sdk.errors import (
    ClientError,
    GroupError,
    MessageQueued,
    RelayRejected,
    RelayUnavailable,
)
from clients.sdk.models import Event, Message, MessageSent, Operation, SendFailed, SendResult
from clients.sdk.pipeline import Settled
from clients.sdk.protocol import OutgoingSend, SendReceipt, message_from_stored
from clients.sdk.sendqueue import Fail, Queued
from clients.store.base import Store
from clients.store.models import (
    ConversationSummary,
    DeliveryState,
    Direction,
    OutboxEntry,
    StoredMessage,
    group_conversation,
    is_group_conversation,
)
from crypto.errors import VoxError

__all__ = [
    "Outbox",
    "conversations",
    "describe",
    "history",
    "mark_read",
    "operations",
    "parse_message_id",
    "queued",
    "send_text",
    "send_typing",
]

ChatContent = TextContent | AttachmentContent
#: What the outbox sends: conversation messages and operations, and verification syncs (to
#: our own devices only, in a lane of their own).
Outgoing = ConversationContent | VerifiedContent
#: The lane of the verification syncs (never a conversation key: no ``:``-less username
#: starts with ``:``).
OWN_DEVICES_LANE = ":own-devices"
#: Seconds an accepted send's ``sent`` may wait for the next send's commit before it is
#: written alone (:meth:`Outbox.flush_sent`).
SENT_DELAY = 0.002
log = logging.getLogger("vox.client")


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)


def parse_message_id(value: str | None) -> bytes:
    """A caller-chosen message id (32 hex digits), or a random one."""
    if value is None:
        return new_message_id()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise ClientError("a message id is 32 hexadecimal digits")
    return raw


async def send_text(core: Core, to: str, text: str, *, message_id: str | None = None) -> SendResult:
    """Send a text to a user or a group conversation (``group:<id>``); returns once the relay
    accepted it. ``message_id`` (32 hex digits) may be chosen by the caller, e.g. to show the
    message before it is accepted; by default it is random."""
    raw_id = parse_message_id(message_id)
    if is_group_conversation(to):
        group_id, _ = group_admin.resolve(core, to)
        content = TextContent(text=text, group_id=group_id, sent_at_ms=now_ms(), message_id=raw_id)
        return await core.send_chat(group_conversation(group_id.hex()), content)
    peers.check_user(to)
    content = TextContent(text=text, sent_at_ms=now_ms(), message_id=raw_id)
    return await core.send_chat(to, content)


async def send_typing(core: Core, to: str, active: bool = True) -> None:
    """Tell ``to`` that we are typing (an ephemeral send: never stored)."""
    if is_group_conversation(to):
        group_id = bytes.fromhex(to.removeprefix("group:"))
        group = core.protocol.groups.get(group_id)
        if group is None:
            return
        others = set(group.members) - {core.username}
        if others:
            typing = Typing(active=active, group_id=group_id, sent_at_ms=now_ms())
            with contextlib.suppress(ClientError):
                await core.send_direct(others, typing, ephemeral=True)
        return
    await core.send_direct(to, Typing(active=active, sent_at_ms=now_ms()), ephemeral=True)


async def mark_read(core: Core, conversation: str, *, ids: Iterable[str] | None = None) -> int:
    """Mark a conversation read — or, with ``ids``, only those of its messages (e.g. the ones
    ``vox receive`` printed) — and send read receipts; returns how many messages. Reading
    starts the disappearing countdown of a message sent under a timer on this device."""
    now = time.time()
    with core.store.transaction():  # the read receipts are owed from this commit
        if ids is None:
            messages = core.store.mark_conversation_read(conversation, now=now)
        else:
            messages = [m for i in dict.fromkeys(ids) if (m := _read(core, conversation, i, now))]
        by_sender: dict[str, list[bytes]] = {}
        for message in messages:
            if message.sender != core.username:
                by_sender.setdefault(message.sender, []).append(bytes.fromhex(message.message_id))
        owed = [
            SendReceipt(sender, ReceiptKind.READ, tuple(read[i : i + RECEIPT_CHUNK]))
            for sender, read in by_sender.items()
            for i in range(0, len(read), RECEIPT_CHUNK)
        ]
        core.receipts.owe(owed)
    for receipt in owed:  # one that cannot go now goes at the next connection
        content = Receipt(kind=receipt.kind, ids=receipt.ids, sent_at_ms=now_ms())
        with contextlib.suppress(ClientError):
            await core.send_direct(receipt.to, content)
            core.receipts.settle(receipt.to, receipt.kind, receipt.ids)
    return len(messages)


def _read(core: Core, conversation: str, message_id: str, now: float) -> StoredMessage | None:
    """Mark one unread incoming message of ``conversation`` read (its countdown starts)."""
    stored = core.store.get_message(message_id)
    if (
        stored is None
        or stored.conversation != conversation
        or stored.direction is not Direction.IN
        or stored.state is not DeliveryState.RECEIVED
    ):
        return None
    expire_at = stored.expire_at
    if stored.expires_in and expire_at is None:
        expire_at = now + stored.expires_in
    read = dataclasses.replace(stored, state=DeliveryState.READ, expire_at=expire_at)
    core.store.replace_message(read)
    return read


Build = Callable[[], list[OutgoingSend]]


def history(core: Core, conversation: str, *, limit: int = 100) -> list[Message]:
    """The last ``limit`` messages of a conversation, oldest first; a message whose edit,
    delete or reaction of ours the relay has not accepted says so (:attr:`Message.unsent`)."""
    core.outbox.flush_sent()
    found = [message_from_stored(m) for m in core.store.history(conversation, limit=limit)]
    unsent: dict[str, list[tuple[str, str]]] = {}
    for op in operations(core, conversation=conversation):
        if op.target is not None:
            unsent.setdefault(op.target, []).append((op.kind, op.state))
    if not unsent:
        return found
    return [
        dataclasses.replace(m, unsent=tuple(unsent[m.id])) if m.id in unsent else m for m in found
    ]


def conversations(core: Core) -> list[ConversationSummary]:
    """Conversations with messages, most recent first (with unread counts)."""
    return core.store.conversations()


def queued(core: Core) -> list[Message]:
    """Messages written but not yet accepted by the relay (oldest first)."""
    out = []
    for entry in core.outbox.pending():
        stored = core.store.get_message(entry.message_id)
        if stored is not None and stored.timer is None:
            out.append(message_from_stored(stored))
    return out


# --- operations: what an outgoing content is, and the ones refused for good -----------------

#: The operations refused for good (newest last, at most :data:`MAX_FAILED`), a secret setting.
_FAILED_KEY = "outbox.failed"
MAX_FAILED = 200


def describe(content: Content) -> tuple[str, str | None]:
    """``(kind, target)`` of an outgoing content: ``text``, ``file``, ``edit``, ``delete``,
    ``reaction``, ``timer``, ``verify`` / ``unverify``; ``target`` the message an edit, delete
    or reaction changes."""
    if isinstance(content, TextContent):
        return "text", None
    if isinstance(content, AttachmentContent):
        return "file", None
    if isinstance(content, EditContent | DeleteContent | ReactionContent):
        kind = {EditContent: "edit", DeleteContent: "delete", ReactionContent: "reaction"}
        return kind[type(content)], content.target.hex()
    if isinstance(content, TimerContent):
        return "timer", None
    if isinstance(content, VerifiedContent):
        return ("verify" if content.state is VerifyState.VERIFIED else "unverify"), None
    return type(content).__name__.lower(), None


def _superseded_by(kind: str, target: str | None, conversation: str) -> tuple[str, str | None, str]:
    """What a refused operation is superseded by: a later accepted one of the same kind on the
    same message — ``verify`` and ``unverify`` being one kind (the user's verification)."""
    return ("verification" if kind in ("verify", "unverify") else kind), target, conversation


def _load_failed(store: Store) -> list[dict[str, Any]]:
    raw = store.get_secret(_FAILED_KEY)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _save_failed(store: Store, failed: list[dict[str, Any]]) -> None:
    kept = failed[-MAX_FAILED:]
    store.set_secret(_FAILED_KEY, json.dumps(kept).encode() if kept else None)


#: The leading bytes (version, type) of a queued text or file: not an operation, not decoded.
_MESSAGES = {
    bytes((CONTENT_VERSION, ContentType.TEXT)),
    bytes((CONTENT_VERSION, ContentType.ATTACHMENT)),
}


def operations(core: Core, *, conversation: str | None = None) -> list[Operation]:
    """Our operations the relay has not accepted: the queued ones (oldest first, in the order
    they will go out), then the ones refused for good (oldest first) — until a later operation
    of the same kind on the same message (or the same user's verification) is accepted.
    ``conversation``: only that conversation's."""
    out: list[Operation] = []
    for entry in core.outbox.pending(conversation):
        if entry.payload[:2] in _MESSAGES:
            continue
        try:
            content = decode_content(entry.payload)
        except VoxError:
            continue
        kind, target = describe(content)
        if kind not in ("text", "file"):
            at = int(entry.created_at * 1000)
            out.append(Operation(entry.message_id, kind, entry.conversation, target, "queued", at))
    for f in _load_failed(core.store):
        if conversation is not None and f["c"] != conversation:
            continue
        out.append(
            Operation(f["id"], f["kind"], f["c"], f["t"], "failed", int(f["at"]), f["reason"])
        )
    return out


@dataclasses.dataclass(slots=True)
class _Write:
    """A :meth:`Outbox.send` whose rows are not written yet."""

    entry: OutboxEntry
    content: Outgoing
    local: Callable[[], object] | None
    waiter: asyncio.Future[SendResult]


class Outbox:
    """Honest sending of conversation messages: texts, files, edits, deletes, reactions and
    disappearing-timer changes.

    A message is persisted (the outbox, and for a text or file the history as ``pending``;
    an edit, delete, reaction or timer change is applied locally at once) and handed to the
    engine as a *durable* send in its conversation's lane
    (:class:`~clients.sdk.sendqueue.SendQueue`) in one transaction, before any frame of it
    leaves; sends called in the same turn of the event loop are written in one transaction
    (one commit for the burst), handed over in call order, and those that may go at once are
    built (encrypted) in that same transaction. Outcomes:

    * accepted → :meth:`send` returns the :class:`SendResult` at once, and the message is
      ``sent``: the row says so from the next send's commit, or :data:`SENT_DELAY` later,
      and before anything reads it through the SDK (:meth:`flush_sent`);
    * the relay cannot take it now (unreachable, or ``busy``/``internal``/``rate_limited``
      after every retry) → it stays in the outbox and :class:`MessageQueued` is raised; it is
      sent on the next connection of any process on this profile, once (same client id), and
      a :class:`MessageSent` event follows;
    * refused for good (unknown user, ``queue_full``, ...) → ``failed``, removed from the
      outbox, the error is raised (a message that never left, e.g. refused while encrypting,
      is removed without a trace).

    Within a conversation messages reach the relay one at a time, in the order they were
    written — across refusals, dropped connections and restarts: the engine's lane holds
    every later message while an earlier one is retried or queued, and after a restart
    :meth:`load` hands the outbox back to the engine oldest first (the outbox's
    ``created_at`` is strictly increasing, see :meth:`_stamp`).
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self._waiting: dict[str, asyncio.Future[SendResult]] = {}
        self._last_stamp = 0.0
        self._loaded = False
        #: Accepted sends whose ``sent`` is not written yet (:meth:`flush_sent`), and the
        #: timer that writes them if no send's commit takes them first.
        self._sent_batch: list[str] = []
        self._sent_timer: asyncio.TimerHandle | None = None
        #: Accepted sends of ``_sent_batch`` whose outcome nobody heard (queued, or reloaded):
        #: id -> (conversation, target) of the :class:`MessageSent` told once ``sent`` is written.
        self._announce: dict[str, tuple[str, str | None]] = {}
        #: Accepted operations whose ``sent`` is not written yet: (kind, target, conversation).
        self._accepted_ops: dict[str, tuple[str, str | None, str]] = {}
        #: Sends called but not written yet (:meth:`_write_queued` runs in the next turn).
        self._to_write: list[_Write] = []

    def load(self) -> None:
        """Hand the store's queued messages that the engine does not hold to it, oldest first
        (held until the next connection or a new message in their conversation). Once per
        connection: after :meth:`forget` (the client disconnected) it reads the store again."""
        if self._loaded:
            return
        self._loaded = True
        core = self.core
        for entry in self.pending():
            self._last_stamp = max(self._last_stamp, entry.created_at)
            if entry.message_id in core.pipeline.sends:
                continue
            try:
                content = decode_content(entry.payload)
            except VoxError:
                content = None
            if not isinstance(content, Outgoing):
                core.store.outbox_remove(entry.message_id)
                continue
            self._submit(entry.conversation, content, queued=True)

    def forget(self) -> None:
        """The engine dropped every pending send (the client disconnected): the next
        :meth:`load` hands the store's queue to it again."""
        self._loaded = False

    def cancel(self, conversation: str, mid: str) -> bool:
        """Withdraw our queued message ``mid`` of ``conversation`` if it never left: it has
        no outbox entry attempted (none of its frames was built, in this process or an
        earlier one) and the engine agrees (:meth:`SendPipeline.cancel
        <clients.sdk.pipeline.SendPipeline.cancel>`). Then its outbox entry is removed, and
        so are the queued edits, deletes and reactions that target it (those that never left
        either) and the refused ones; it reaches no one, not even our other devices. Returns
        whether it was withdrawn (``False``: not queued, or possibly at the relay already).

        Call it inside a store transaction with the message's own removal. It does not
        await, nor does the build of a send (:meth:`SendPipeline._build
        <clients.sdk.pipeline.SendPipeline._build>`, :meth:`SendPipeline.build_queued
        <clients.sdk.pipeline.SendPipeline.build_queued>`), so no send is picked for sending
        between the check and the cancel."""
        core = self.core
        entries = core.store.outbox_pending(conversation=conversation)
        entry = next((e for e in entries if e.message_id == mid), None)
        if entry is None or entry.attempts or not core.pipeline.cancel(mid):
            return False
        self._withdraw(mid)
        for other in entries:
            if other.message_id == mid or other.attempts or other.payload[:2] in _MESSAGES:
                continue
            try:
                _, target = describe(decode_content(other.payload))
            except VoxError:
                continue
            if target == mid and core.pipeline.cancel(other.message_id):
                self._withdraw(other.message_id)
        failed = _load_failed(core.store)
        kept = [f for f in failed if f["t"] != mid]
        if len(kept) != len(failed):
            _save_failed(core.store, kept)
        return True

    def _withdraw(self, mid: str) -> None:
        """A cancelled send: its outbox entry goes; a caller still waiting hears why."""
        self.core.store.outbox_remove(mid)
        waiter = self._waiting.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientError(f"{mid} was deleted before it was sent"))

    def _stamp(self) -> float:
        """A ``created_at`` later than every earlier one (the store orders the outbox by it,
        and two messages written within one clock tick must keep their order)."""
        self._last_stamp = max(time.time(), self._last_stamp + 0.001)
        return self._last_stamp

    async def send(
        self, conversation: str, content: Outgoing, *, local: Callable[[], object] | None = None
    ) -> SendResult:
        """Persist, then send ``content`` (see the class docstring for the outcomes).
        ``local``: its effect on this device, written in the same transaction as the outbox
        entry (a verification sync: ``conversation`` is the user concerned; it goes to our
        own other devices)."""
        core = self.core
        self.load()
        if not isinstance(content, VerifiedContent):
            self._check_recipient(conversation)  # refused before anything is kept
        if isinstance(content, ChatContent):
            expire = message_rules.timer(core.store, conversation)
            if expire and not content.expire:  # sent under the conversation's timer
                content = dataclasses.replace(content, expire=expire)
        mid = content.message_id.hex()
        entry = OutboxEntry(mid, conversation, content.to_bytes(), self._stamp())
        waiter: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._waiting[mid] = waiter
        self._to_write.append(_Write(entry, content, local, waiter))
        if len(self._to_write) == 1:  # sends begun in this turn of the loop commit together
            asyncio.get_running_loop().call_soon(self._write_queued)
        try:
            return await waiter
        finally:
            self._waiting.pop(mid, None)

    def _write_queued(self) -> None:
        """Write the sends queued since the last call in one transaction (one commit for a
        burst of concurrent :meth:`send` calls) and hand them to the engine in call order; the
        ones that may go at once are built (encrypted) in that transaction too
        (:meth:`SendPipeline.build_queued <clients.sdk.pipeline.SendPipeline.build_queued>`:
        one commit for the rows and the ratchet steps). If that transaction fails it is rolled
        back and each is written alone (and built by the engine's builder), so one bad send
        fails only its own caller."""
        batch, self._to_write = self._to_write, []
        pipeline = self.core.pipeline
        submitted: set[str] = set()
        built = None
        # ``sent`` updates waiting for their timer go in this transaction too (one commit
        # less); if it fails they are written alone (flush_sent), as the sends are.
        sent, self._sent_batch = self._sent_batch, []
        try:
            # Unsynced (survives a kill, not a power loss): the pipeline flushes before the
            # first frame of it leaves, and the caller hears nothing before that.
            with self.core.store.transaction(sync=False):
                if sent:
                    self._write_sent(sent)
                self._write_all(batch)
                for write in batch:
                    entry = write.entry
                    self._submit(entry.conversation, write.content, encoded=entry.payload)
                    submitted.add(entry.message_id)
                built = pipeline.build_queued()
        except Exception:
            if built is not None:
                pipeline.unbuild(built)
            self._sent_batch = sent + self._sent_batch
            sent = []
            self._write_alone(batch, submitted)
        if sent:
            self._sent_written(sent)

    def _write_alone(self, batch: list[_Write], submitted: set[str]) -> None:
        """Write (and hand over, if not yet) each send of a failed burst in its own
        transaction; one that fails is withdrawn from the engine and its caller hears why."""
        for write in batch:
            mid = write.entry.message_id
            try:
                with self.core.store.transaction(sync=False):
                    self._write(write)
                if mid not in submitted:
                    self._submit(write.entry.conversation, write.content)
            except Exception as exc:
                if mid in submitted:
                    self.core.pipeline.cancel(mid)  # never built: nothing of it left
                if not write.waiter.done():
                    write.waiter.set_exception(exc)

    def _write_all(self, batch: list[_Write]) -> None:
        """:meth:`_write` for each send of ``batch`` in order; the history rows of consecutive
        chat messages are added together (one statement), before anything else is applied."""
        chats: list[tuple[str, ChatContent]] = []
        for write in batch:
            content = write.content
            if write.local is None and isinstance(content, ChatContent):
                chats.append((write.entry.conversation, content))
                self.core.store.outbox_put(write.entry)
                continue
            if chats:  # an operation may read them (e.g. an edit of one)
                self.core.protocol.record_outgoing_all(chats)
                chats = []
            self._write(write)
        if chats:
            self.core.protocol.record_outgoing_all(chats)

    def _write(self, write: _Write) -> None:
        """A send's rows: its local effect, the history or the operation applied, the outbox."""
        core, conversation, content = self.core, write.entry.conversation, write.content
        if write.local is not None:
            write.local()
        if isinstance(content, ChatContent):
            core.protocol.record_outgoing(conversation, content)
        elif not isinstance(content, VerifiedContent):
            address = core.identity.address
            message_rules.apply(
                core.store, conversation, address, content, time.time(),
                own=core.username, pending=True,
            )  # fmt: skip
        core.store.outbox_put(write.entry)

    def _check_recipient(self, conversation: str) -> None:
        if is_group_conversation(conversation):
            group_id = bytes.fromhex(conversation.removeprefix("group:"))
            if self.core.protocol.groups.get(group_id) is None:
                raise GroupError(f"unknown group {group_id.hex()}")
            return
        peers.check_user(conversation)
        trust.require_trusted(self.core.store, conversation)

    def _submit(
        self,
        conversation: str,
        content: Outgoing,
        *,
        queued: bool = False,
        encoded: bytes | None = None,
    ) -> None:
        """Hand a send to the engine (``encoded``: ``content.to_bytes()``, if at hand)."""
        core, mid = self.core, content.message_id.hex()
        users: set[str]
        encode: Callable[[], list[OutgoingSend]]
        lane = conversation
        if isinstance(content, VerifiedContent):  # to our own other devices only
            users, lane = {core.username}, OWN_DEVICES_LANE
            encode = lambda: [core.protocol.encode_direct(core.username, content)]  # noqa: E731
        elif is_group_conversation(conversation):
            group_id = bytes.fromhex(conversation.removeprefix("group:"))
            group = core.protocol.groups.get(group_id)
            users = set(group.members) if group is not None else {core.username}
            encode = lambda: core.protocol.encode_group(group_id, content)  # noqa: E731
        else:
            users = {conversation, core.username}
            encode = lambda: [  # noqa: E731
                core.protocol.encode_direct(conversation, content, encoded=encoded)
            ]

        def build() -> list[OutgoingSend]:
            with core.store.transaction(sync=False):  # the pipeline flushes before writing
                core.store.outbox_attempted(mid)
                return encode()

        kind, target = describe(content)

        def settle(outcome: Settled, result: SendResult | None, announce: bool) -> None:
            self._settle(conversation, mid, (kind, target), outcome, result, announce)

        core.pipeline.submit(mid, users, build, settle, lane=lane, durable=True, queued=queued)

    def _settle(
        self,
        conversation: str,
        mid: str,
        what: tuple[str, str | None],
        outcome: Settled,
        result: SendResult | None,
        announce: bool,
    ) -> None:
        """How a message's send ended (the engine's :data:`~clients.sdk.pipeline.Settle`).
        ``what``: its kind and target (:func:`describe`)."""
        store, waiter = self.core.store, self._waiting.get(mid)
        kind, target = what
        if isinstance(outcome, Queued):
            error = outcome.error
            reason = (
                error.reason
                if isinstance(error, RelayUnavailable)
                else f"the relay answered {error.code}"
                if isinstance(error, RelayRejected)
                else str(error)
            )
            if waiter is not None and not waiter.done():
                waiter.set_exception(MessageQueued(mid, conversation, reason))
            return
        if isinstance(outcome, Fail):
            message = kind in ("text", "file")
            reason = str(outcome.error)
            with store.transaction():
                store.outbox_remove(mid)
                if not message:  # its local effect stays, marked not sent
                    failed = _load_failed(store)
                    failed.append({"id": mid, "kind": kind, "c": conversation, "t": target,
                                   "reason": reason, "at": now_ms()})  # fmt: skip
                    _save_failed(store, failed)
                if store.get_message(mid) is not None:
                    if message and not outcome.written and waiter is not None:
                        store.delete_message(mid)  # it never left: no trace
                    else:
                        store.update_message_state(mid, DeliveryState.FAILED)
            if waiter is not None and not waiter.done():
                waiter.set_exception(outcome.error)
            else:  # nobody is waiting for the answer: tell whoever listens
                log.warning("queued %s %s refused for good: %s", kind, mid, outcome.error)
                event = SendFailed(mid, conversation, kind, target, reason, now_ms())
                self.core.spawn(self.core.emit([event]))
            return
        if kind not in ("text", "file"):
            self._accepted_ops[mid] = (kind, target, conversation)
        # The relay has it: the caller hears so now; its ``sent`` is written later, with the
        # next send's commit or by a timer, and before anything reads it (flush_sent).
        self._mark_sent(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(result or SendResult(mid, now_ms(), 0))
        if announce or waiter is None:  # nobody heard the outcome: told once it is written
            self._announce[mid] = (conversation, target)

    def _clear_failed(self, accepted: list[tuple[str, str | None, str]]) -> None:
        """An accepted operation supersedes the refused ones of its kind on the same message
        (or the same user's verification): the recipients now have the newer one."""
        if not accepted:
            return
        store = self.core.store
        failed = _load_failed(store)
        newer = {_superseded_by(*a) for a in accepted}
        keep = [f for f in failed if _superseded_by(f["kind"], f["t"], f["c"]) not in newer]
        if len(keep) != len(failed):
            _save_failed(store, keep)

    def _mark_sent(self, mid: str) -> None:
        """Accepted send ``mid``'s ``sent`` is to be written: with the next send's commit
        (:meth:`_write_queued`), or at the latest :data:`SENT_DELAY` seconds from now."""
        self._sent_batch.append(mid)
        if self._sent_timer is None:
            loop = asyncio.get_running_loop()
            self._sent_timer = loop.call_later(SENT_DELAY, self.flush_sent)

    def flush_sent(self) -> None:
        """Write the accepted sends' pending ``sent`` now (one transaction). :meth:`send`
        returns at the relay's answer and the ``sent`` follows, so whatever reads message
        states or the outbox from the store calls this first (:func:`history`,
        :meth:`pending`, ...); the client calls it when it disconnects. If the write fails (or
        the process dies first), those messages stay ``pending`` in the outbox and go out
        again, under the same id, on the next connection: the relay answers the first
        ``accepted`` again and stores nothing twice (``docs/protocol-ws.md`` §3.1.1), and
        the ``sent`` is written then."""
        ids, self._sent_batch = self._sent_batch, []
        if self._sent_timer is not None:
            self._sent_timer.cancel()
            self._sent_timer = None
        if not ids:
            return
        try:
            # Not synced: if lost, the outbox resends with the same id (stored once).
            with self.core.store.transaction(sync=False):
                self._write_sent(ids)
        except Exception:
            log.warning("writing the sent state of %d messages failed", len(ids), exc_info=True)
            self._sent_written(ids, written=False)
        else:
            self._sent_written(ids)

    def pending(self, conversation: str | None = None) -> list[OutboxEntry]:
        """The store's queued messages (of ``conversation``, if given), oldest first — the
        accepted ones' ``sent`` written first (:meth:`flush_sent`)."""
        self.flush_sent()
        return self.core.store.outbox_pending(conversation=conversation)

    def _write_sent(self, ids: list[str]) -> None:
        """The rows of accepted sends (inside the caller's transaction)."""
        for mid in ids:
            self.core.store.outbox_remove(mid)
        self.core.protocol.mark_sent(ids)
        self._clear_failed([self._accepted_ops[m] for m in ids if m in self._accepted_ops])

    def _sent_written(self, ids: list[str], *, written: bool = True) -> None:
        """The ``sent`` of ``ids`` was committed (or, ``written=False``, failed): the accepted
        sends nobody heard of are announced (:class:`MessageSent`)."""
        if not self._sent_batch and self._sent_timer is not None:
            self._sent_timer.cancel()
            self._sent_timer = None
        events: list[Event] = []
        for mid in ids:
            self._accepted_ops.pop(mid, None)
            announce = self._announce.pop(mid, None)
            if announce is not None and written:
                conversation, target = announce
                events.append(MessageSent(mid, conversation, now_ms(), target))
        if events:
            self.core.spawn(self.core.emit(events))

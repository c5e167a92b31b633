"""Chat messages over :class:`~clients.sdk.core.Core`: texts, typing, read receipts, and the
outbox that makes a chat message survive a failed send (sent again, same id, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from clients.sdk import group_admin, message_rules, peers, trust
from clients.sdk.content import (
    AttachmentContent,
    Receipt,
    ReceiptKind,
    TextContent,
    Typing,
    decode_content,
    new_message_id,
)
from clients.sdk.core import Core
from clients.sdk.errors import (
    ClientError,
    GroupError,
    MessageQueued,
    RelayRejected,
    RelayUnavailable,
    UnknownUser,
)
from clients.sdk.models import Message, MessageSent, SendResult
from clients.sdk.protocol import OutgoingSend, message_from_stored
from clients.store.models import (
    ConversationSummary,
    DeliveryState,
    OutboxEntry,
    group_conversation,
    is_group_conversation,
)
from wire.codes import RETRYABLE_SEND_ERRORS

__all__ = [
    "Outbox",
    "conversations",
    "history",
    "mark_read",
    "parse_message_id",
    "queued",
    "send_text",
    "send_typing",
]

ChatContent = TextContent | AttachmentContent
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


async def mark_read(core: Core, conversation: str) -> int:
    """Mark a conversation read and send read receipts; returns how many messages."""
    messages = core.store.mark_conversation_read(conversation, now=time.time())
    by_sender: dict[str, list[bytes]] = {}
    for message in messages:
        if message.sender != core.username:
            by_sender.setdefault(message.sender, []).append(bytes.fromhex(message.message_id))
    for sender, ids in by_sender.items():
        for i in range(0, len(ids), 500):
            receipt = Receipt(
                kind=ReceiptKind.READ, ids=tuple(ids[i : i + 500]), sent_at_ms=now_ms()
            )
            with contextlib.suppress(ClientError):
                await core.send_direct(sender, receipt)
    return len(messages)


Build = Callable[[], list[OutgoingSend]]


def history(core: Core, conversation: str, *, limit: int = 100) -> list[Message]:
    """The last ``limit`` messages of a conversation, oldest first."""
    return [message_from_stored(m) for m in core.store.history(conversation, limit=limit)]


def conversations(core: Core) -> list[ConversationSummary]:
    """Conversations with messages, most recent first (with unread counts)."""
    return core.store.conversations()


def queued(core: Core) -> list[Message]:
    """Messages written but not yet accepted by the relay (oldest first)."""
    out = []
    for entry in core.store.outbox_pending():
        stored = core.store.get_message(entry.message_id)
        if stored is not None:
            out.append(message_from_stored(stored))
    return out


class Outbox:
    """Honest sending of chat messages (texts and files).

    A message is persisted (history ``pending`` + outbox) in the transaction of its first
    encryption, then sent. Outcomes:

    * accepted → ``sent``; :meth:`send` returns the :class:`SendResult`;
    * the relay cannot take it now (unreachable, or ``busy``/``internal``/``rate_limited``
      after every retry) → it stays in the outbox and :class:`MessageQueued` is raised; it is
      sent on the next connection of any process on this profile, once (same client id), and
      a :class:`MessageSent` event follows;
    * refused for good (unknown user, ``queue_full``, ...) → ``failed``, removed from the
      outbox, the error is raised.

    Within a conversation messages reach the relay in the order they were written: while a
    conversation has queued messages, a new one is queued behind them and the conversation is
    drained oldest first (:meth:`drain`).
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.in_flight: set[str] = set()
        self._queued: set[str] | None = None  # conversations with queued messages
        self._drains: dict[str, asyncio.Lock] = {}
        self._sent_batch: list[str] = []
        self._sent_flush: asyncio.Future[None] | None = None
        self._sent_timer: asyncio.TimerHandle | None = None

    def queued_conversations(self) -> set[str]:
        """Conversations with messages waiting in the outbox (read from the store once)."""
        if self._queued is None:
            pending = self.core.store.outbox_pending()
            self._queued = {e.conversation for e in pending if e.message_id not in self.in_flight}
        return self._queued

    async def send(self, conversation: str, content: ChatContent) -> SendResult:
        """Persist, then send ``content`` (see the class docstring for the outcomes)."""
        core = self.core
        expire = message_rules.timer(core.store, conversation)
        if expire and not content.expire:  # sent under the conversation's timer
            content = dataclasses.replace(content, expire=expire)
        mid = content.message_id.hex()
        entry = OutboxEntry(mid, conversation, content.to_bytes(), time.time())

        def persist() -> None:
            core.protocol.record_outgoing(conversation, content)
            core.store.outbox_put(entry)

        if conversation in self.queued_conversations():  # behind the queued ones, in order
            self._check_recipient(conversation)
            with core.store.transaction():
                persist()
            return await self.drain(conversation, until=mid)
        try:
            return await self._send_entry(conversation, content, persist)
        except (RelayUnavailable, RelayRejected, UnknownUser) as exc:
            raise self._settle(conversation, mid, exc) from None

    def _check_recipient(self, conversation: str) -> None:
        if not is_group_conversation(conversation):
            peers.check_user(conversation)
            trust.require_trusted(self.core.store, conversation)

    def _settle(self, conversation: str, mid: str, exc: ClientError) -> ClientError:
        """After a failed attempt: queue the message (transient) or mark it failed."""
        store = self.core.store
        if store.get_message(mid) is None:
            return exc  # refused before anything was kept
        reason: str | None = None
        if isinstance(exc, MessageQueued):
            reason = exc.reason
        elif isinstance(exc, RelayUnavailable):
            reason = str(exc)
        elif isinstance(exc, RelayRejected) and exc.code in RETRYABLE_SEND_ERRORS:
            reason = f"the relay answered {exc.code}"
        if reason is not None:
            self.queued_conversations().add(conversation)
            return MessageQueued(mid, conversation, reason)
        with store.transaction():
            store.outbox_remove(mid)
            store.update_message_state(mid, DeliveryState.FAILED)
        return exc

    async def drain(self, conversation: str, *, until: str | None = None) -> SendResult:
        """Send ``conversation``'s queued messages oldest first, stopping after ``until``
        (the caller's message); raises :class:`MessageQueued` if the relay still cannot take
        them."""
        core = self.core
        lock = self._drains.setdefault(conversation, asyncio.Lock())
        async with lock:
            result: SendResult | None = None
            for entry in core.store.outbox_pending():
                if entry.conversation != conversation or entry.message_id in self.in_flight:
                    continue
                content = decode_content(entry.payload)
                if not isinstance(content, ChatContent):
                    core.store.outbox_remove(entry.message_id)
                    continue
                try:
                    sent = await self._send_entry(conversation, content)
                except (RelayUnavailable, RelayRejected, UnknownUser) as exc:
                    settled = self._settle(conversation, entry.message_id, exc)
                    if isinstance(settled, MessageQueued):
                        raise MessageQueued(
                            until or entry.message_id, conversation, settled.reason
                        ) from None
                    if entry.message_id == until:
                        raise settled from None
                    log.warning("queued message %s refused for good: %s", entry.message_id, settled)
                    continue
                await core.emit([MessageSent(entry.message_id, conversation, now_ms())])
                if entry.message_id == until:
                    result = sent
                    break
            if not any(e.conversation == conversation for e in core.store.outbox_pending()):
                self.queued_conversations().discard(conversation)
        return result or SendResult(until or "", now_ms(), 0)

    async def flush(self) -> None:
        """Drain every conversation with queued messages (after a (re)connect)."""
        pending = self.core.store.outbox_pending()
        for conversation in dict.fromkeys(e.conversation for e in pending):
            try:
                await self.drain(conversation)
            except MessageQueued as exc:
                log.info("outbox: %s still queued (%s)", conversation, exc.reason)
                return  # the relay is still unreachable: try again on the next connection

    async def _send_entry(
        self, conversation: str, content: ChatContent, persist: Callable[[], None] | None = None
    ) -> SendResult:
        mid = content.message_id.hex()
        self.in_flight.add(mid)
        try:
            return await self._send_once(conversation, content, persist)
        finally:
            self.in_flight.discard(mid)

    async def _send_once(
        self, conversation: str, content: ChatContent, persist: Callable[[], None] | None
    ) -> SendResult:
        core, mid = self.core, content.message_id.hex()

        def persisted(build: Build) -> list[OutgoingSend]:
            with core.store.transaction():
                if persist is not None and core.store.get_message(mid) is None:
                    persist()
                else:
                    core.store.outbox_attempted(mid)
                return build()

        try:
            if is_group_conversation(conversation):
                group_id = bytes.fromhex(conversation.removeprefix("group:"))
                group = core.protocol.groups.get(group_id)
                if group is None:
                    raise GroupError(f"unknown group {group_id.hex()}")
                result = await core.deliver(
                    set(group.members),
                    lambda: persisted(lambda: core.protocol.encode_group(group_id, content)),
                )
            else:
                self._check_recipient(conversation)
                result = await core.deliver(
                    {conversation},
                    lambda: persisted(lambda: [core.protocol.encode_direct(conversation, content)]),
                )
        except RelayUnavailable:
            if persist is not None and core.store.get_message(mid) is None:
                with core.store.transaction():  # keep it: the outbox sends it later
                    persist()
            raise
        await self._mark_sent(mid)
        return result or SendResult(mid, now_ms(), 0)

    async def _mark_sent(self, mid: str) -> None:
        loop = asyncio.get_running_loop()
        self._sent_batch.append(mid)
        if self._sent_flush is None:
            self._sent_flush = loop.create_future()
            self._sent_timer = loop.call_later(0.002, self.flush_sent)
        await asyncio.shield(self._sent_flush)

    def flush_sent(self) -> None:
        """Write pending ``sent`` updates now (one transaction)."""
        if self._sent_timer is not None:
            self._sent_timer.cancel()
        ids, self._sent_batch = self._sent_batch, []
        future, self._sent_flush = self._sent_flush, None
        self._sent_timer = None
        error: Exception | None = None
        if ids:
            try:
                # Not synced: if lost, the outbox resends with the same id (stored once).
                with self.core.store.transaction(sync=False):
                    for mid in ids:
                        self.core.store.outbox_remove(mid)
                        self.core.protocol.mark_sent(mid)
            except Exception as exc:
                error = exc
        if future is not None and not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)

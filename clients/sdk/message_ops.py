"""Everyday operations on messages: edit, delete (for everyone / for me), replies, reactions,
disappearing messages (the per-conversation timer and the expiry sweep) and local search.

The receiving half (:func:`apply`, :func:`on_stored`) is synchronous over the
:class:`~clients.store.base.Store` and called by :class:`~clients.sdk.protocol.ClientProtocol`
inside its store transaction, with the clock as a parameter. The sending half are functions
over :class:`~clients.sdk.core.Core`, bound as :class:`~clients.sdk.VoxClient` methods. Rules
(the same on every device, so all devices converge):

* only a message's author edits or deletes it for everyone; an edit keeps the earlier texts;
  a delete leaves a tombstone (text, file, reactions gone; a downloaded file is removed);
* a reaction is one emoji per person per message, replaced by the next, removed by ``""``;
* an operation on a message this device does not hold (yet) is kept — at most
  :data:`MAX_PENDING` of them, for :data:`PENDING_TTL` seconds — and applied when it arrives;
* an operation is applied only within the conversation it was sent in;
* a message sent under a disappearing timer is deleted from this device's store (and its file
  from disk) ``expires_in`` seconds after it was sent (ours) or read on this device (theirs).
"""

from __future__ import annotations

import time

from clients.sdk import attachments, group_admin, peers
from clients.sdk.content import (
    DeleteContent,
    EditContent,
    OperationContent,
    Quote,
    ReactionContent,
    TextContent,
    TimerContent,
    check_timer,
)
from clients.sdk.core import Core
from clients.sdk.errors import ClientError, NotDeletableForEveryone
from clients.sdk.message_rules import (
    MAX_PENDING,
    PENDING_TTL,
    forget,
    parse_duration,
    run_sweeper,
    sweep,
    timer,
    withdraw_timer,
)
from clients.sdk.models import Message, SendResult, Withdrawn
from clients.store.models import StoredMessage, group_conversation, is_group_conversation

__all__ = [
    "MAX_PENDING",
    "PENDING_TTL",
    "delete",
    "edit",
    "parse_duration",
    "react",
    "reply",
    "resolve_target",
    "run_sweeper",
    "search",
    "set_timer",
    "sweep",
    "timer",
]


def _ms(now: float) -> int:
    return int(now * 1000)


# --- sending -------------------------------------------------------------------------------


def resolve_target(core: Core, target: str) -> str:
    """The conversation key of a TARGET: a username, ``group:NAME`` or ``group:ID``."""
    if is_group_conversation(target):
        group_id, _ = group_admin.resolve(core, target)
        return group_conversation(group_id.hex())
    peers.check_user(target)
    return target


def _message(core: Core, conversation: str, message_id: str) -> StoredMessage:
    stored = core.store.get_message(message_id.lower())
    if stored is None or stored.conversation != conversation:
        raise ClientError(f"no message {message_id} in this conversation")
    return stored


async def _send(core: Core, conversation: str, content: OperationContent) -> SendResult:
    """Through the outbox, like a text: applied here at once, kept and sent in order with the
    conversation's other messages (:class:`~clients.sdk.errors.MessageQueued` when the relay
    cannot take it now)."""
    return await core.send_chat(conversation, content)


def _group_id(conversation: str) -> bytes:
    return (
        bytes.fromhex(conversation.removeprefix("group:"))
        if is_group_conversation(conversation)
        else b""
    )


def _head(conversation: str) -> dict[str, object]:
    return {"group_id": _group_id(conversation), "sent_at_ms": _ms(time.time())}


async def edit(core: Core, target: str, message_id: str, text: str) -> SendResult | None:
    """Replace the text of our message ``message_id`` in ``target``'s conversation."""
    conversation = resolve_target(core, target)
    stored = _message(core, conversation, message_id)
    if stored.sender != core.username or stored.deleted or stored.text is None:
        raise ClientError("only your own text messages can be edited")
    content = EditContent(target=bytes.fromhex(stored.message_id), text=text, **_head(conversation))  # type: ignore[arg-type]
    return await _send(core, conversation, content)


async def delete(
    core: Core, target: str, message_id: str, *, for_me: bool = False
) -> SendResult | Withdrawn | None:
    """Delete a message for everyone (only our own), or only from this device.

    Our message still queued and never handed to the relay is withdrawn either way
    (:meth:`Outbox.cancel <clients.sdk.messaging.Outbox.cancel>`, with the edits and reactions
    queued on it): it reaches no one, no DELETE goes out, it is removed here (and our file
    message's blob on the relay, at once or on a later connection) — returns
    :class:`~clients.sdk.models.Withdrawn`. Once it may have reached the relay it cannot be
    recalled: for me, it goes from this device only (a copy that comes back stays deleted;
    returns None); for everyone, a DELETE follows it (its :class:`SendResult`), and our file
    message's blob is deleted on the relay once the relay accepted the DELETE — also when the
    DELETE was queued (:class:`~clients.sdk.errors.MessageQueued`) and goes out later, in this
    process or another (:func:`attachments.delete_withdrawn
    <clients.sdk.attachments.delete_withdrawn>`).

    A timer change's row: withdrawn, the change is undone on this device too (the timer it
    replaced is back, ``Withdrawn.timer``); once it may have left, delete for me removes the
    row only (the timer stands) and delete for everyone raises
    :class:`~clients.sdk.errors.NotDeletableForEveryone` (a setting every member keeps)."""
    conversation = resolve_target(core, target)
    stored = _message(core, conversation, message_id)
    if stored.sender == core.username:
        now_timer: int | None = None
        with core.store.transaction():
            cancelled = core.outbox.cancel(conversation, stored.message_id)
            if cancelled:  # a file's blob goes too: now, or on a later connection
                attachments.delete_after(core, stored.message_id, stored)
                forget(core.store, stored, time.time())
                if stored.timer is not None:  # it reached no one: nor does it stay here
                    now_timer = withdraw_timer(core.store, conversation, stored.message_id)
        if cancelled:
            await attachments.delete_withdrawn(core, stored.message_id)
            return Withdrawn(stored.message_id, now_timer)
    if for_me:
        # Remembered (in the same transaction): a copy that arrives again stays deleted.
        forget(core.store, stored, time.time())
        return None
    if stored.timer is not None:
        raise NotDeletableForEveryone(stored.message_id)
    if stored.sender != core.username:
        raise ClientError("only your own messages can be deleted for everyone (use --for-me)")
    content = DeleteContent(target=bytes.fromhex(stored.message_id), **_head(conversation))  # type: ignore[arg-type]
    op = content.message_id.hex()
    # A file's blob goes once the relay accepted the DELETE: listed with the DELETE's outbox
    # entry, so a DELETE queued now goes out later (in this process or the next) with it.
    result = await core.outbox.send(
        conversation, content, local=lambda: attachments.delete_after(core, op, stored)
    )
    await attachments.delete_withdrawn(core, op)
    return result


async def react(
    core: Core, target: str, message_id: str, emoji: str, *, remove: bool = False
) -> SendResult | None:
    """Set (or with ``remove``, remove) our reaction to a message."""
    conversation = resolve_target(core, target)
    stored = _message(core, conversation, message_id)
    if stored.deleted:
        raise ClientError("that message was deleted")
    if not remove and not emoji.strip():
        raise ClientError("an emoji is required")
    content = ReactionContent(
        target=bytes.fromhex(stored.message_id), emoji="" if remove else emoji.strip(),
        **_head(conversation),  # type: ignore[arg-type]
    )  # fmt: skip
    return await _send(core, conversation, content)


async def set_timer(core: Core, target: str, seconds: int) -> SendResult | None:
    """Set the conversation's disappearing-messages timer for every member (0 = off)."""
    conversation = resolve_target(core, target)
    content = TimerContent(seconds=check_timer(seconds), **_head(conversation))  # type: ignore[arg-type]
    return await _send(core, conversation, content)


async def reply(core: Core, target: str, message_id: str, text: str) -> SendResult:
    """Send ``text`` as a reply quoting ``message_id`` (id, author, a short excerpt)."""
    conversation = resolve_target(core, target)
    stored = _message(core, conversation, message_id)
    if stored.deleted:
        raise ClientError("that message was deleted")
    excerpt = (
        stored.text
        if stored.text is not None
        else str((stored.attachment or {}).get("file_name", ""))
    )
    quote = Quote(bytes.fromhex(stored.message_id), stored.sender, Quote.excerpt_of(excerpt))
    content = TextContent(text=text, quote=quote, **_head(conversation))  # type: ignore[arg-type]
    return await core.send_chat(conversation, content)


def search(core: Core, query: str, *, chat: str | None = None, limit: int = 50) -> list[Message]:
    """Local history search (every word of ``query``, whole words), newest first."""
    from clients.sdk.protocol import message_from_stored

    conversation = resolve_target(core, chat) if chat else None
    core.outbox.flush_sent()  # the states of our messages the relay accepted
    found = core.store.search_messages(query, conversation=conversation, limit=limit)
    return [message_from_stored(m) for m in found]

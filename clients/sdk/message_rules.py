"""The receiving rules of message operations (edit, delete, reactions, the disappearing
timer) and the expiry sweep: synchronous functions over the
:class:`~clients.store.base.Store`, with the clock as a parameter, called by
:class:`~clients.sdk.protocol.ClientProtocol` inside its store transaction. The sending half is
:mod:`clients.sdk.message_ops`, whose docstring states the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clients.sdk.content import (
    AttachmentContent,
    DeleteContent,
    EditContent,
    OperationContent,
    ReactionContent,
    TextContent,
    TimerContent,
    check_timer,
    decode_content,
)
from clients.sdk.errors import ClientError
from clients.sdk.models import MessageUpdate
from clients.store.base import Store
from clients.store.models import DeliveryState, Direction, StoredMessage, group_conversation
from crypto.errors import InvalidValue
from crypto.keys import DeviceAddress

__all__ = [
    "MAX_PENDING",
    "PENDING_TTL",
    "apply",
    "forget",
    "forget_all",
    "on_stored",
    "parse_duration",
    "run_sweeper",
    "stored_message",
    "sweep",
    "timer",
    "withdraw_timer",
]

log = logging.getLogger("vox.client")

#: At most this many operations on messages not (yet) held are kept ...
MAX_PENDING = 1000
#: ... for at most this many seconds.
PENDING_TTL = 7 * 24 * 3600
_PENDING_KEY = "message_ops.pending"
_TIMER_PREFIX = "timer:"
#: Per conversation: our timer changes not yet accepted, oldest first, each with the timer this
#: device had before it (JSON ``[[id, seconds], ...]``), so a withdrawn one can be undone.
_UNDO_PREFIX = "timer.undo:"


def _ms(now: float) -> int:
    return int(now * 1000)


# --- the conversation timer -------------------------------------------------------------


def timer(store: Store, conversation: str) -> int:
    """The conversation's disappearing-messages timer in seconds (0 = off)."""
    value = store.get_setting(_TIMER_PREFIX + conversation)
    return int(value) if value else 0


def _set_timer(store: Store, conversation: str, seconds: int) -> None:
    store.set_setting(_TIMER_PREFIX + conversation, str(seconds) if seconds else None)


def _undo_list(store: Store, conversation: str) -> list[list[Any]]:
    raw = store.get_setting(_UNDO_PREFIX + conversation)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _save_undo(store: Store, conversation: str, undo: list[list[Any]]) -> None:
    store.set_setting(_UNDO_PREFIX + conversation, json.dumps(undo) if undo else None)


def _remember_undo(store: Store, conversation: str, mid: str, pending: bool) -> None:
    """Before a timer change is applied: ours still queued is listed with the timer it
    replaces (the entries no longer queued are dropped: they can no longer be withdrawn); any
    other (a member's, our other device's) is the timer now, whatever ours queued would undo."""
    if not pending:
        if store.get_setting(_UNDO_PREFIX + conversation):
            _save_undo(store, conversation, [])
        return
    queued = {e.message_id for e in store.outbox_pending(conversation=conversation)}
    undo = [e for e in _undo_list(store, conversation) if e[0] in queued]
    _save_undo(store, conversation, [*undo, [mid, timer(store, conversation)]])


def withdraw_timer(store: Store, conversation: str, mid: str) -> int:
    """Our timer change ``mid`` was withdrawn (it reached no one): this device goes back to
    the timer it had before it, unless a later change (ours still queued, or anyone's
    received) has replaced it since — then a later withdrawal of ours goes back past it.
    Returns the conversation's timer now. Call it in the withdrawal's transaction."""
    undo = _undo_list(store, conversation)
    at = next((i for i, e in enumerate(undo) if e[0] == mid), None)
    if at is not None:
        if at == len(undo) - 1:  # the timer this device has now: back to the one before
            _set_timer(store, conversation, int(undo[at][1]))
        else:  # replaced by a later change of ours: that one now undoes to the earlier timer
            undo[at + 1][1] = undo[at][1]
        _save_undo(store, conversation, undo[:at] + undo[at + 1 :])
    return timer(store, conversation)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> int:
    """``off``/``0`` → 0; ``30s``, ``5m``, ``1h``, ``1d``, ``4w`` or plain seconds; checked
    against the allowed range (30 s .. 4 weeks)."""
    text = value.strip().lower()
    if text in ("off", "0"):
        return 0
    try:
        seconds = int(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else int(text)
        return check_timer(seconds)
    except (ValueError, InvalidValue):
        raise ClientError(
            f"bad duration {value!r}: off, or 30s .. 4w (units s, m, h, d, w)"
        ) from None


# --- receiving -----------------------------------------------------------------------------


def _conversation_of(content: OperationContent, fallback: str) -> str:
    return group_conversation(content.group_id.hex()) if content.group_id else fallback


def apply(
    store: Store,
    conversation: str,
    sender: DeviceAddress,
    content: OperationContent,
    now: float,
    *,
    own: str,
    pending: bool = False,
) -> list[MessageUpdate]:
    """Apply an operation received (or sent by us — ``own`` is our username) in
    ``conversation``; returns the events. ``pending``: written on this device and not yet
    accepted by the relay (a timer change's row is ``pending`` until then, not ``sent``)."""
    at = _ms(now)
    if isinstance(content, TimerContent):
        # A repeat (a resend under a new client id, a transcript) changes nothing: its row is
        # stored already, or was deleted for me here (``gone:``) and stays deleted.
        if store.is_gone(content.message_id.hex()) or not store.add_message(
            _timer_notice(conversation, sender, content, now, own, pending)
        ):
            return []
        _remember_undo(store, conversation, content.message_id.hex(), pending)
        _set_timer(store, conversation, content.seconds)
        return [
            MessageUpdate(
                "timer",
                conversation,
                None,
                sender.username,
                sender.device_id,
                at,
                seconds=content.seconds,
            )
        ]
    return _apply_op(store, conversation, sender, content, now)


def _apply_op(
    store: Store,
    conversation: str,
    sender: DeviceAddress,
    content: EditContent | DeleteContent | ReactionContent,
    now: float,
) -> list[MessageUpdate]:
    """An edit, delete or reaction: applied to its target, or kept until the target arrives
    (dropped if the target was removed from this device: it will not be stored again)."""
    stored = store.get_message(content.target.hex())
    if stored is None and store.is_gone(content.target.hex()):
        return []
    if stored is None:
        _defer(store, conversation, sender, content, now)
        return []
    if stored.conversation != conversation:
        return []
    return _apply_to(store, stored, sender, content, _ms(now))


def _timer_notice(
    conversation: str,
    sender: DeviceAddress,
    content: TimerContent,
    now: float,
    own: str,
    pending: bool,
) -> StoredMessage:
    """The history row announcing a timer change (under the TIMER's own message id, the same
    on every device; already read: a notice is never unread). Ours: ``pending`` while this
    device's outbox holds it (``sent`` once accepted), ``sent`` from another device."""
    outgoing = sender.username == own
    state = DeliveryState.READ
    if outgoing:
        state = DeliveryState.PENDING if pending else DeliveryState.SENT
    return stored_message(
        content, conversation, sender, outgoing, now, state, timer=content.seconds
    )


def stored_message(
    content: TextContent | AttachmentContent | TimerContent,
    conversation: str,
    sender: DeviceAddress,
    outgoing: bool,
    received_at: float,
    state: DeliveryState,
    **fields: Any,
) -> StoredMessage:
    """The history row of a content message: its id, conversation, author, direction and
    times from ``content`` (``fields``: the rest of the row)."""
    return StoredMessage(
        message_id=content.message_id.hex(),
        conversation=conversation,
        direction=Direction.OUT if outgoing else Direction.IN,
        sender=sender.username,
        sender_device=sender.device_id,
        sent_at=content.sent_at_ms / 1000,
        received_at=received_at,
        state=state,
        **fields,
    )


def _apply_to(
    store: Store,
    stored: StoredMessage,
    sender: DeviceAddress,
    content: EditContent | DeleteContent | ReactionContent,
    at: int,
) -> list[MessageUpdate]:
    def update(kind: str, text: str | None = None, emoji: str | None = None) -> list[MessageUpdate]:
        return [
            MessageUpdate(
                kind,
                stored.conversation,
                stored.message_id,
                sender.username,
                sender.device_id,
                at,
                text=text,
                emoji=emoji,
            )
        ]

    author = sender.username == stored.sender
    if isinstance(content, EditContent):
        if not author or stored.deleted or stored.text is None:
            return []
        store.replace_message(
            dataclasses.replace(stored, text=content.text, edits=(*stored.edits, stored.text))
        )
        return update("edit", text=content.text)
    if isinstance(content, DeleteContent):
        if not author or stored.deleted or stored.timer is not None:  # a timer change stays
            return []
        _remove_file(stored)
        store.replace_message(
            dataclasses.replace(
                stored, text=None, attachment=None, deleted=True, edits=(), reactions=()
            )
        )
        return update("delete")
    if stored.deleted:
        return []
    reactions = dict(stored.reactions)
    if content.emoji:
        reactions[sender.username] = content.emoji
    else:
        reactions.pop(sender.username, None)
    store.replace_message(dataclasses.replace(stored, reactions=tuple(sorted(reactions.items()))))
    return update("reaction", emoji=content.emoji)


def _remove_file(stored: StoredMessage) -> None:
    path = (stored.attachment or {}).get("path")
    if path:
        with contextlib.suppress(OSError):
            Path(str(path)).unlink(missing_ok=True)


def _load_pending(store: Store) -> list[dict[str, object]]:
    raw = store.get_secret(_PENDING_KEY)
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _save_pending(store: Store, pending: list[dict[str, object]]) -> None:
    store.set_secret(_PENDING_KEY, json.dumps(pending).encode() if pending else None)


def _defer(
    store: Store, conversation: str, sender: DeviceAddress, content: OperationContent, now: float
) -> None:
    pending = [p for p in _load_pending(store) if float(str(p["at"])) > now - PENDING_TTL]
    pending.append(
        {
            "c": conversation,
            "u": sender.username,
            "d": sender.device_id,
            "b": content.to_bytes().hex(),
            "t": getattr(content, "target", b"").hex(),
            "at": now,
        }
    )
    _save_pending(store, pending[-MAX_PENDING:])


def on_stored(store: Store, message_id: str, now: float) -> list[MessageUpdate]:
    """A message was just stored: apply operations that arrived before it."""
    pending = _load_pending(store)
    if not pending:
        return []
    mine = [p for p in pending if p.get("t") == message_id]
    if not mine:
        return []
    _save_pending(store, [p for p in pending if p not in mine])
    events: list[MessageUpdate] = []
    for p in mine:
        content = decode_content(bytes.fromhex(str(p["b"])))
        sender = DeviceAddress(str(p["u"]), int(str(p["d"])))
        if isinstance(content, EditContent | DeleteContent | ReactionContent):
            events += _apply_op(store, str(p["c"]), sender, content, now)
    return events


def forget(store: Store, stored: StoredMessage, now: float) -> None:
    """Remove a message from this device for good (delete for me, disappeared): its file, its
    row (remembered as ``gone:``, so a copy that arrives again stays deleted) and the
    operations kept for it, in one transaction."""
    forget_all(store, [stored], now)


def forget_all(store: Store, messages: list[StoredMessage], now: float) -> None:
    """:func:`forget` for several messages (the kept operations are read and written once)."""
    if not messages:
        return
    with store.transaction():
        for message in messages:
            _remove_file(message)
            store.forget_message(message.message_id, now)
        ids = {m.message_id for m in messages}
        pending = _load_pending(store)
        if any(p.get("t") in ids for p in pending):
            _save_pending(store, [p for p in pending if p.get("t") not in ids])


def sweep(store: Store, now: float) -> list[str]:
    """Delete every message whose disappearing time has come (and its file); returns ids."""
    return [m.message_id for m in _sweep(store, now)]


def _sweep(store: Store, now: float) -> list[StoredMessage]:
    # Read first: a sweep that finds nothing (nearly every one) opens no write transaction.
    if not store.expired_messages(now):
        return []
    with store.transaction():
        gone = store.expired_messages(now)
        forget_all(store, gone, now)
    return gone


def expired_events(gone: list[StoredMessage], now: float) -> list[MessageUpdate]:
    """``MessageUpdate(kind="expired", target=id)`` for each message the sweep deleted."""
    return [
        MessageUpdate("expired", m.conversation, m.message_id, m.sender, m.sender_device, _ms(now))
        for m in gone
    ]


async def run_sweeper(
    store: Store,
    clock: Callable[[], float] = time.time,
    every: float = 1.0,
    emit: Callable[[list[MessageUpdate]], Awaitable[None]] | None = None,
) -> None:
    """Background task: :func:`sweep` every ``every`` seconds; ``emit`` gets an ``expired``
    :class:`MessageUpdate` per message deleted (so a UI drops its row at once)."""
    while True:
        try:
            now = clock()
            gone = _sweep(store, now)
            if gone and emit is not None:
                await emit(expired_events(gone, now))
        except Exception:  # never stop the loop
            log.exception("expiry sweep failed")
        await asyncio.sleep(every)

"""SDK values as JSON objects: what ``vox receive --json`` prints and ``vox daemon`` sends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from clients.sdk.models import (
    AttachmentInfo,
    DecryptFailure,
    DeliveryState,
    DeviceInfo,
    Event,
    GroupChanged,
    GroupInfo,
    KeyChanged,
    Message,
    MessageSent,
    MessageUpdate,
    Operation,
    ReceiptEvent,
    ReplyRef,
    SendFailed,
    SendResult,
    SignedOut,
    TypingEvent,
    Verification,
    Withdrawn,
)

__all__ = [
    "event_from_json",
    "event_json",
    "group_json",
    "iso",
    "message_from_json",
    "message_json",
    "operation_json",
    "result_json",
    "update_json",
    "withdrawn_json",
]


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 (UTC, milliseconds)."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def message_json(message: Message) -> dict[str, Any]:
    """A message as ``vox receive --json`` prints it (``docs/protocol-client.md`` §9)."""
    out: dict[str, Any] = {
        "id": message.id,
        "from": message.sender,
        "device": message.device,
        "conversation": message.conversation,
        "sent_at": iso(message.sent_at),
        "sent_at_ms": message.sent_at,
    }
    if message.group_id:
        out["group"] = message.group_id
    if message.outgoing:
        out["outgoing"] = True
        out["state"] = message.state.value
    if message.attachment is not None:
        a = message.attachment
        out["attachment"] = {
            "name": a.file_name,
            "content_type": a.content_type,
            "size": a.size,
            "path": str(a.path) if a.path else None,
        }
    elif message.timer is not None:  # a timer announcement row (history)
        out["timer"] = message.timer
    else:
        out["text"] = message.text
    if message.edited:
        out["edited"] = True
        out["edits"] = list(message.edits)
    if message.deleted:
        out["deleted"] = True
    if message.reply_to is not None:
        r = message.reply_to
        out["reply_to"] = {"id": r.id, "author": r.author, "excerpt": r.excerpt}
    if message.reactions:
        out["reactions"] = {user: emoji for user, emoji in message.reactions}
    if message.expires_in:
        out["expires_in"] = message.expires_in
    if message.unsent:
        out["unsent"] = [{"kind": kind, "state": state} for kind, state in message.unsent]
    return out


def operation_json(op: Operation) -> dict[str, Any]:
    """An operation of ours the relay has not accepted (``status``)."""
    out: dict[str, Any] = {
        "id": op.id,
        "kind": op.kind,
        "conversation": op.conversation,
        "target": op.target,
        "state": op.state,
        "at_ms": op.at,
    }
    if op.reason:
        out["reason"] = op.reason
    return out


def update_json(event: MessageUpdate) -> dict[str, Any]:
    """An edit, delete, reaction, timer change or expiry (``kind`` is that word)."""
    out: dict[str, Any] = {
        "kind": event.kind,
        "from": event.sender,
        "device": event.device,
        "conversation": event.conversation,
        "at_ms": event.at,
    }
    if event.target is not None:
        out["target"] = event.target
    if event.kind == "edit":
        out["text"] = event.text
    elif event.kind == "reaction":
        out["emoji"] = event.emoji
        out["removed"] = not event.emoji
    elif event.kind == "timer":
        out["seconds"] = event.seconds
    return out


def group_json(group: GroupInfo) -> dict[str, Any]:
    """A group."""
    return {
        "id": group.group_id,
        "name": group.name,
        "members": list(group.members),
        "epoch": group.epoch,
        "conversation": group.conversation,
    }


def result_json(value: SendResult) -> dict[str, Any]:
    """An accepted send."""
    return {"id": value.id, "accepted_at": value.accepted_at, "devices": value.devices}


def withdrawn_json(value: Withdrawn) -> dict[str, Any]:
    """A delete that withdrew our queued message before it was sent. Shaped like an accepted
    send that reached no device (``accepted_at`` null, ``devices`` 0) plus ``withdrawn``, so
    a caller that reads ``delete`` answers as sends keeps working; a withdrawn timer change
    adds ``timer``, the conversation's timer on this device again."""
    answer = {"id": value.id, "accepted_at": None, "devices": 0, "withdrawn": True}
    return answer if value.timer is None else {**answer, "timer": value.timer}


def verification_json(value: Verification) -> dict[str, Any]:
    """A safety number and trust state."""
    return {
        "username": value.username,
        "safety_number": value.safety_number,
        "key_changed": value.key_changed,
        "verified": value.verified,
    }


def device_json(value: DeviceInfo) -> dict[str, Any]:
    """One of our devices."""
    return {
        "device_id": value.device_id,
        "identity_key": value.identity_key_hex,
        "current": value.current,
    }


def event_json(event: Event) -> dict[str, Any]:
    """Any event, with a ``kind``: ``message``, ``receipt``, ``typing``, ``key_changed``,
    ``group``, ``decrypt_failure``, ``sent`` (a queued message was accepted), ``failed`` (a
    queued message or operation was refused for good) or ``signed_out``."""
    if isinstance(event, Message):
        return {"kind": "message", **message_json(event)}
    if isinstance(event, ReceiptEvent):
        return {
            "kind": "receipt",
            "from": event.sender,
            "device": event.device,
            "state": event.kind.value,
            "message_ids": list(event.message_ids),
            "at_ms": event.at,
        }
    if isinstance(event, TypingEvent):
        return {
            "kind": "typing",
            "from": event.sender,
            "device": event.device,
            "conversation": event.conversation,
            "active": event.active,
            "at_ms": event.at,
        }
    if isinstance(event, KeyChanged):
        return {
            "kind": "key_changed",
            "username": event.username,
            "safety_number": event.safety_number,
            "at_ms": event.at,
        }
    if isinstance(event, GroupChanged):
        return {
            "kind": "group",
            "id": event.group_id,
            "name": event.name,
            "action": event.action,
            "members": list(event.members),
            "by": event.by,
            "at_ms": event.at,
        }
    if isinstance(event, DecryptFailure):
        return {
            "kind": "decrypt_failure",
            "from": event.sender,
            "device": event.device,
            "error": event.error,
            "envelope": event.envelope_id,
            "at_ms": event.at,
        }
    if isinstance(event, MessageUpdate):
        return update_json(event)
    if isinstance(event, MessageSent):
        sent = {
            "kind": "sent",
            "id": event.message_id,
            "conversation": event.conversation,
            "at_ms": event.at,
        }
        return sent if event.target is None else {**sent, "target": event.target}
    if isinstance(event, SendFailed):
        return {
            "kind": "failed",
            "id": event.message_id,
            "conversation": event.conversation,
            "content": event.kind,
            "target": event.target,
            "reason": event.reason,
            "at_ms": event.at,
        }
    assert isinstance(event, SignedOut)
    return {"kind": "signed_out", "reason": event.reason, "at_ms": event.at}


def message_from_json(value: dict[str, Any]) -> Message:
    """Inverse of :func:`message_json` (an attachment's pointer stays with the daemon:
    download it with the daemon's ``download`` method)."""
    attachment = None
    if "attachment" in value:
        a = value["attachment"]
        path = a.get("path")
        attachment = AttachmentInfo(
            a["name"], a["content_type"], a["size"], "", b"", Path(path) if path else None
        )
    return Message(
        id=value["id"],
        conversation=value["conversation"],
        sender=value["from"],
        device=value["device"],
        sent_at=value["sent_at_ms"],
        received_at=0,
        text=value.get("text"),
        attachment=attachment,
        group_id=value.get("group"),
        outgoing=bool(value.get("outgoing", False)),
        state=DeliveryState(value.get("state", "received")),
        edited=bool(value.get("edited", False)),
        deleted=bool(value.get("deleted", False)),
        reply_to=ReplyRef(**value["reply_to"]) if value.get("reply_to") else None,
        reactions=tuple(sorted(value.get("reactions", {}).items())),
        expires_in=int(value.get("expires_in", 0)),
        edits=tuple(value.get("edits", ())),
        timer=value.get("timer"),
        unsent=tuple((u["kind"], u["state"]) for u in value.get("unsent", ())),
    )


def event_from_json(value: dict[str, Any]) -> Event | None:
    """Inverse of :func:`event_json` (``None`` for a kind this version does not know)."""
    kind = value.get("kind")
    if kind == "message":
        return message_from_json(value)
    if kind == "receipt":
        ids = tuple(value["message_ids"])
        state = DeliveryState(value["state"])
        return ReceiptEvent(value["from"], value["device"], state, ids, value["at_ms"])
    if kind == "typing":
        return TypingEvent(value["from"], value["device"], value["conversation"],
                           value["active"], value["at_ms"])  # fmt: skip
    if kind == "key_changed":
        return KeyChanged(value["username"], value["safety_number"], value["at_ms"])
    if kind == "group":
        return GroupChanged(value["id"], value["name"], value["action"],
                            tuple(value["members"]), value["by"], value["at_ms"])  # fmt: skip
    if kind == "decrypt_failure":
        return DecryptFailure(value["from"], value["device"], value["error"],
                              value["envelope"], value["at_ms"])  # fmt: skip
    if kind == "sent":
        return MessageSent(value["id"], value["conversation"], value["at_ms"], value.get("target"))
    if kind == "failed":
        return SendFailed(value["id"], value["conversation"], value["content"],
                          value.get("target"), value["reason"], value["at_ms"])  # fmt: skip
    if kind == "signed_out":
        return SignedOut(value["reason"], value["at_ms"])
    if kind in ("edit", "delete", "reaction", "timer", "expired"):
        return MessageUpdate(kind, value["conversation"], value.get("target"), value["from"],
                             value["device"], value["at_ms"], text=value.get("text"),
                             emoji=value.get("emoji"), seconds=value.get("seconds"))  # fmt: skip
    return None

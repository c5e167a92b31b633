"""Pure rendering helpers: SDK values → Rich ``Text`` (never markup, so user text is inert)."""

from __future__ import annotations

import datetime as dt

from rich.text import Text

from clients.sdk.models import Message
from clients.store.models import DeliveryState
from clients.units import format_size

__all__ = ["STATE_MARKS", "format_size", "format_time", "render_message", "state_mark"]

STATE_MARKS = {
    DeliveryState.PENDING: "…",
    DeliveryState.SENT: "✓",
    DeliveryState.DELIVERED: "✓✓",
    DeliveryState.READ: "✓✓ read",
    DeliveryState.FAILED: "✗ not sent",
    DeliveryState.RECEIVED: "",
}


def format_time(ms: int, *, tz: dt.tzinfo | None = None) -> str:
    """``HH:MM`` in local time (``tz`` for tests)."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=tz).strftime("%H:%M")


def state_mark(state: DeliveryState) -> str:
    """The delivery mark shown after an outgoing message."""
    return STATE_MARKS.get(state, "")


def render_message(message: Message, *, accent: str = "cyan", tz: dt.tzinfo | None = None) -> Text:
    """One line (or more) of the conversation pane; ``accent`` colours our own name."""
    line = Text()
    line.append(f"{format_time(message.sent_at, tz=tz)} ", style="dim")
    who = "you" if message.outgoing else message.sender
    line.append(who, style=f"bold {accent}" if message.outgoing else "bold")
    if message.device and not message.outgoing:
        line.append(f"·{message.device}", style="dim")
    line.append(": ")
    if message.reply_to is not None:
        quoted = message.reply_to
        line.append(f"↪ {quoted.author}: {quoted.excerpt[:40]} ", style="dim italic")
    if message.deleted:
        line.append("🗑 this message was deleted", style="dim italic")
    if message.attachment is not None:
        att = message.attachment
        line.append(f"📎 {att.file_name} ({format_size(att.size)})", style="italic")
        if att.path is not None:
            line.append(f" → {att.path}", style="dim")
    if message.text:
        if message.attachment is not None:
            line.append(" ")
        line.append(message.text)
    if message.edited:
        line.append(" (edited)", style="dim")
    if message.reactions:
        counts = message.reaction_counts()
        line.append("  " + " ".join(f"{e}{n if n > 1 else ''}" for e, n in counts.items()))
    if message.expires_in:
        line.append(" ⏱", style="dim")
    mark = state_mark(message.state) if message.outgoing else ""
    if mark:
        line.append(
            f"  {mark}", style="bold red" if message.state is DeliveryState.FAILED else "dim"
        )
    return line

"""Pure rendering helpers: SDK values → Rich ``Text`` (never markup, so user text is inert)."""

from __future__ import annotations

import datetime as dt

from rich.text import Text

from clients.sdk.models import Message
from clients.store.models import DeliveryState
from clients.units import format_size, timer_notice

__all__ = [
    "STATE_MARKS",
    "format_size",
    "format_time",
    "render_message",
    "state_mark",
]

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


def render_message(
    message: Message,
    *,
    accent: str = "cyan",
    tz: dt.tzinfo | None = None,
    ident: str = "",
    show_device: bool = False,
    me: str = "",
) -> Text:
    """One row of the conversation pane; ``accent`` colours our own name.

    ``ident`` is the short id the commands take (``#3f9a0c``, see :mod:`clients.tui.ids`);
    ``show_device`` adds the sender's device number (``bob·2``, ``you·467399649``) — the
    caller decides when it helps; ``me`` (our username) makes a quote of ours read ``you``.
    A reply starts with the quoted message on its own line (``↪ alice #b2c3d4: excerpt``).
    A timer announcement is a notice, not a message (``12:00 alice set disappearing messages
    to 1 hour``), dim like the window's own notes.
    """
    line = Text()
    if message.timer is not None:
        line.append(f"{format_time(message.sent_at, tz=tz)} ", style="dim")
        if ident:
            line.append(f"{ident} ", style="dim")
        who = "you" if message.outgoing else message.sender
        line.append(timer_notice(who, message.timer), style="dim italic")
        if message.outgoing and message.state in (DeliveryState.PENDING, DeliveryState.FAILED):
            _mark(line, message.state)  # queued, or refused: "sent" needs no mark on a notice
        return line
    if message.reply_to is not None:
        quoted = message.reply_to
        author = "you" if me and quoted.author == me else quoted.author
        line.append(f"  ↪ {author} #{quoted.id[:6]}: {quoted.excerpt[:60]}\n", style="dim italic")
    line.append(f"{format_time(message.sent_at, tz=tz)} ", style="dim")
    if ident:
        line.append(f"{ident} ", style="dim")
    who = "you" if message.outgoing else message.sender
    line.append(who, style=f"bold {accent}" if message.outgoing else "bold")
    if show_device and message.device:
        line.append(f"·{message.device}", style="dim")
    line.append(": ")
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
    if message.outgoing:
        _mark(line, message.state)
    for kind, state in message.unsent:  # our edit / delete / reaction the relay has not taken
        if state == "failed":
            line.append(f"  ✗ {kind} not sent", style="bold red")
        else:
            line.append(f"  … {kind} queued", style="dim")
    return line


def _mark(line: Text, state: DeliveryState) -> None:
    mark = state_mark(state)
    if mark:
        line.append(f"  {mark}", style="bold red" if state is DeliveryState.FAILED else "dim")

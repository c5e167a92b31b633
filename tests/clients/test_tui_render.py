"""Rendering of conversation lines: timestamps, delivery marks, attachments, inert user text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from clients.sdk.models import AttachmentInfo, Message
from clients.store.models import DeliveryState
from clients.tui.render import format_size, render_message

UTC = dt.UTC
T = int(dt.datetime(2026, 11, 27, 9, 5, tzinfo=UTC).timestamp() * 1000)


def message(**kw: object) -> Message:
    base: dict[str, object] = {
        "id": "a" * 32,
        "conversation": "bob",
        "sender": "bob",
        "device": 2,
        "sent_at": T,
        "received_at": T,
        "text": "hello",
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def test_an_incoming_line_shows_time_short_id_sender_and_text() -> None:
    assert render_message(message(), tz=UTC).plain == "09:05 bob: hello"
    line = render_message(message(), tz=UTC, ident="#aaaaaa").plain
    assert line == "09:05 #aaaaaa bob: hello"


def test_the_device_number_only_when_the_caller_says_it_helps() -> None:
    line = render_message(message(), tz=UTC, ident="#aaaaaa", show_device=True).plain
    assert line == "09:05 #aaaaaa bob·2: hello"
    ours = message(sender="alice", device=467399649, outgoing=True, state=DeliveryState.SENT)
    assert render_message(ours, tz=UTC, show_device=True).plain == "09:05 you·467399649: hello  ✓"


def test_outgoing_lines_show_the_delivery_state() -> None:
    marks = {
        state: render_message(
            message(sender="alice", outgoing=True, state=state), tz=UTC
        ).plain.rsplit("  ", 1)[1]
        for state in DeliveryState
        if state is not DeliveryState.RECEIVED
    }
    assert marks == {
        DeliveryState.PENDING: "…",
        DeliveryState.SENT: "✓",
        DeliveryState.DELIVERED: "✓✓",
        DeliveryState.READ: "✓✓ read",
        DeliveryState.FAILED: "✗ not sent",
    }
    assert render_message(message(outgoing=True), tz=UTC).plain.startswith("09:05 you: hello")


def test_user_text_is_never_interpreted_as_markup() -> None:
    text = "[bold red]boom[/] [link=http://evil]x[/link]"
    rendered = render_message(message(text=text), tz=UTC)
    assert rendered.plain.endswith(text)
    assert all(span.style in ("dim", "bold", "") for span in rendered.spans)


def test_attachments_show_name_size_and_saved_path() -> None:
    att = AttachmentInfo("report.pdf", "application/pdf", 3 * 1024 * 1024, "00", b"", Path("/d/r"))
    line = render_message(message(text=None, attachment=att), tz=UTC).plain
    assert line == "09:05 bob: 📎 report.pdf (3.0 MiB) → /d/r"


def test_sizes_are_human_readable() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 10 * 1024 * 1024, 5 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "10.0 MiB",
        "5120.0 GiB",
    ]

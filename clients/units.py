"""Sizes and durations shown to people, one way in the CLI and the TUI: file sizes in binary
units (``B``, ``KiB``, ``MiB``, ``GiB``) of the file's own size (never the padded
ciphertext's); disappearing-message timers in words (``1 hour``, ``4 weeks``) — the one
duration form of every surface (``vox disappear``, the history rows, the TUI's title)."""

from __future__ import annotations

__all__ = ["format_duration", "format_size", "timer_notice"]


def format_size(size: int) -> str:
    """``0 B``, ``1023 B``, ``1.0 KiB``, ``68.4 KiB``, ``10.0 MiB``, ``5120.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_DURATION_UNITS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60))


def format_duration(seconds: int) -> str:
    """``off``, ``30 seconds``, ``1 minute``, ``1 hour``, ``90 minutes``, ``4 weeks``: the
    largest unit that divides it exactly."""
    if not seconds:
        return "off"
    count, unit = seconds, "second"
    for name, size in _DURATION_UNITS:
        if seconds % size == 0:
            count, unit = seconds // size, name
            break
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def withdrawn_notice(timer: int | None) -> str:
    """What a delete that withdrew our queued message says; a withdrawn timer change also
    names the timer this device has again (``timer``: seconds, 0 = off)."""
    said = "withdrawn before sending: it reached no one"
    return said if timer is None else f"{said} (disappearing messages: {format_duration(timer)})"


def timer_notice(who: str, seconds: int) -> str:
    """``alice set disappearing messages to 1 hour`` / ``alice turned off disappearing
    messages`` (``who`` may be ``you``)."""
    if not seconds:
        return f"{who} turned off disappearing messages"
    return f"{who} set disappearing messages to {format_duration(seconds)}"

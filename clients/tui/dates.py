"""Day separators of the conversation pane: ``Today``, ``Yesterday``, ``Monday 28 November``
(this year) or ``28 November 2025`` (older), in local time (``tz`` for tests)."""

from __future__ import annotations

import datetime as dt

__all__ = ["day_label", "local_day"]


def local_day(ms: int, *, tz: dt.tzinfo | None = None) -> dt.date:
    """The calendar day of a Unix-millisecond time, in ``tz`` (default: the local zone)."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=tz).date()


def day_label(day: dt.date, *, today: dt.date) -> str:
    """What the separator above the first message of ``day`` says."""
    if day == today:
        return "Today"
    if day == today - dt.timedelta(days=1):
        return "Yesterday"
    if day.year == today.year:
        return f"{day:%A} {day.day} {day:%B}"
    return f"{day.day} {day:%B %Y}"

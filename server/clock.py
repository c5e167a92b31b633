"""The relay's single source of wall-clock time (integer Unix seconds)."""

from __future__ import annotations

import time

__all__ = ["now"]


def now() -> int:
    """Current Unix time in whole seconds."""
    return int(time.time())

"""Notifications for messages in conversations that are not open: the terminal bell, and a
desktop notification — ``notify-send`` when it is installed, else the OSC 777 and OSC 9 escape
sequences (understood by many terminals: kitty, foot, WezTerm, iTerm2, Windows Terminal, ...).

The notification names the sender and the conversation, never the message text (the desktop's
notification daemon and its history are outside the end-to-end encryption).

On by default; ``vox chat --no-notify`` or ``VOX_CHAT_NOTIFY=0`` turns them off
(``VOX_CHAT_NOTIFY=bell`` keeps the bell only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Any

__all__ = ["ENV", "Notifier", "mode_from_env"]

ENV = "VOX_CHAT_NOTIFY"


def mode_from_env() -> str:
    """``"off"``, ``"bell"`` or ``"desktop"`` (bell and desktop; the default)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "off", "no", "false"):
        return "off"
    if value == "bell":
        return "bell"
    return "desktop"


def _clean(text: str) -> str:
    """No control characters (they would end the escape sequence early)."""
    return "".join(c if c.isprintable() else " " for c in text).replace(";", ",")


class Notifier:
    """Rings and notifies for ``app`` (a Textual app) according to ``mode``."""

    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.sent: list[tuple[str, str]] = []  # (title, body), for the window's tests
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, title: str, body: str) -> None:
        """Bell, then the desktop notification (best effort: failures are ignored)."""
        if self.mode == "off":
            return
        self.sent.append((title, body))
        self.app.bell()
        if self.mode != "desktop":
            return
        exe = shutil.which("notify-send")
        if exe is not None:
            task = asyncio.ensure_future(self._notify_send(exe, title, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            driver = getattr(self.app, "_driver", None)
            if driver is not None and not getattr(self.app, "is_headless", True):
                t, b = _clean(title), _clean(body)
                driver.write(f"\x1b]777;notify;{t};{b}\x1b\\\x1b]9;{t}: {b}\x1b\\")

    @staticmethod
    async def _notify_send(exe: str, title: str, body: str) -> None:
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                exe,
                "--app-name=Vox",
                "--",
                title,
                body,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)

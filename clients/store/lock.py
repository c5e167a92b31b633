"""The profile lock: one process per profile directory (``fcntl.flock`` on ``vox.lock``).

The kernel releases the lock when the holder dies, so a crashed process never leaves a stale
lock. The holder writes its pid into the file for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from clients.store.errors import ProfileLocked

__all__ = ["LOCK_NAME", "ProfileLock"]

LOCK_NAME = "vox.lock"
_POLL = 0.05


class ProfileLock:
    """An exclusive lock on a profile directory; :meth:`acquire` waits up to ``timeout``."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, polling until ``timeout`` seconds; :class:`ProfileLocked` otherwise."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise ProfileLocked(self.path.parent, pid) from None
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None

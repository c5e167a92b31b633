"""The free-disk watermark: refuse new stored data before the disk fills up.

When the file system holding ``data_dir`` (attachments; the SQLite database) has fewer than
``limits.min_free_disk_bytes`` free, the relay refuses attachment uploads with
``507 insufficient_storage`` and durable sends with an ``insufficient_storage`` error frame,
so that SQLite or PostgreSQL (when its data lives on the same disk) never hits a full disk
in the middle of a transaction. Reads, acks (which free space) and ephemeral sends go on.

The probe is a plain callable (``free_bytes``) so that tests and operators can replace it
(``RelayState.disk.free_bytes = ...``); its answer is cached for ``ttl`` seconds, so the
check costs one ``statvfs`` per second at most, whatever the traffic.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from server.clock import Clock
from server.errors import InsufficientStorage

__all__ = ["DiskGuard", "free_bytes_of"]


def free_bytes_of(path: Path) -> Callable[[], int]:
    """A probe: free bytes of the file system holding ``path`` (or its nearest parent)."""

    def probe() -> int:
        target = path
        while not target.exists() and target != target.parent:
            target = target.parent
        return shutil.disk_usage(target).free

    return probe


class DiskGuard:
    """Answers "is free disk space below the watermark?" (thread-safe, cached)."""

    def __init__(
        self,
        min_free_bytes: int,
        free_bytes: Callable[[], int],
        *,
        clock: Clock,
        ttl: float = 1.0,
    ) -> None:
        self.min_free_bytes = min_free_bytes
        self.free_bytes = free_bytes
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._low = False

    def low(self) -> bool:
        """True while free space is below ``min_free_bytes`` (never with a watermark of 0)."""
        if self.min_free_bytes <= 0:
            return False
        now = self._clock.monotonic()
        with self._lock:
            if self._checked_at is None or now - self._checked_at >= self.ttl:
                try:
                    self._low = self.free_bytes() < self.min_free_bytes
                except OSError:
                    self._low = False  # cannot tell: do not refuse on a failing probe
                self._checked_at = now
            return self._low

    def refresh(self) -> None:
        """Forget the cached answer (the next :meth:`low` probes again)."""
        with self._lock:
            self._checked_at = None

    def check(self) -> None:
        """Raise :class:`~server.errors.InsufficientStorage` (507) when :meth:`low`."""
        if self.low():
            raise InsufficientStorage(
                "the relay is low on storage; nothing was stored; retry later"
            )

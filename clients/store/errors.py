"""Typed errors of the local store.

::

    StoreError                      any failure of the local store
    ├── WrongPassphrase             the passphrase does not open this profile (or is missing)
    ├── KeyFileError(path, reason)  the key file is missing, malformed or readable by others
    ├── StoreCorrupted(what)        the database or a row fails to decode / authenticate
    └── ProfileLocked(path, pid)    another process holds the profile
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KeyFileError", "ProfileLocked", "StoreCorrupted", "StoreError", "WrongPassphrase"]


class StoreError(Exception):
    """Base of every error raised by :mod:`clients.store`."""


class WrongPassphrase(StoreError):
    """The passphrase does not open this profile (or the profile needs one and none was given)."""


class KeyFileError(StoreError):
    """The store's key file is missing, malformed or readable by group/others."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"key file {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreCorrupted(StoreError):
    """The database file or one of its rows does not decode or authenticate."""

    def __init__(self, what: str) -> None:
        super().__init__(f"local store is corrupted: {what}")
        self.what = what


class ProfileLocked(StoreError):
    """Another process holds the profile's lock (and it was not released within the timeout)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f" (pid {pid})" if pid else ""
        super().__init__(f"profile {path} is in use by another vox process{holder}")
        self.path = path
        self.pid = pid

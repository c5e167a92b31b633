"""Account-level operations on a profile: delete the account, change the store passphrase,
and find out whether a profile needs a passphrase before opening it.

The relay's side is ``DELETE /v1/accounts/me`` (``docs/protocol-relay.md``): a bearer token
plus the account key's signature over ``"VoxAccountDelete-v1" || 0x00 || username``, so that a
stolen token alone cannot destroy an account.
"""

from __future__ import annotations

import contextlib
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from clients.sdk.errors import ClientError
from wire.rest import AccountDeleteIn

if TYPE_CHECKING:
    from clients.sdk.client import VoxClient

__all__ = [
    "ACCOUNT_DELETE_LABEL",
    "PROFILE_FILES",
    "ProfileProtection",
    "change_passphrase",
    "delete_account",
    "profile_protection",
    "remove_profile_files",
]

#: Signing label of an account deletion (the signed data is the UTF-8 username).
ACCOUNT_DELETE_LABEL = b"VoxAccountDelete-v1"

#: The files a profile consists of (``downloads/`` holds the user's received files: kept).
PROFILE_FILES = ("vox.db", "vox.db-wal", "vox.db-shm", "vox.key", "vox.key.new", "vox.lock")


class ProfileProtection(StrEnum):
    """How a profile's store key is protected."""

    NONE = "none"  # no profile in this home
    PASSPHRASE = "scrypt"  # noqa: S105 - the kdf name: a key derived from a passphrase
    KEY_FILE = "keyfile"  # a 0600 key file next to the store
    UNKNOWN = "unknown"  # unreadable metadata (opening it reports the real error)


def profile_protection(home: Path) -> ProfileProtection:
    """Read (without unlocking anything) how the profile in ``home`` is protected."""
    db = home / "vox.db"
    if not db.exists():
        return ProfileProtection.NONE
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'kdf'").fetchone()
        finally:
            conn.close()
        kdf = bytes(row[0]).decode() if row else ""
    except (sqlite3.Error, UnicodeDecodeError, TypeError):
        return ProfileProtection.UNKNOWN
    try:
        return ProfileProtection(kdf)
    except ValueError:
        return ProfileProtection.UNKNOWN


async def delete_account(client: VoxClient) -> None:
    """Ask the relay to delete the whole account (every device); raises on refusal."""
    signature = client.identity.account_key.sign(
        ACCOUNT_DELETE_LABEL, client.username.encode("utf-8")
    )
    body = AccountDeleteIn(signature=signature)
    await client.http.authed("DELETE", "/v1/accounts/me", body=body)


def change_passphrase(client: VoxClient, passphrase: str | None) -> None:
    """Re-encrypt the local store under ``passphrase`` (None: a key file instead)."""
    from clients.store.sqlite import SqliteStore

    if not isinstance(client.store, SqliteStore):
        raise ClientError("this profile's store has no passphrase to change")
    if passphrase is not None and not passphrase:
        raise ClientError("the new passphrase must not be empty")
    client.store.change_passphrase(passphrase)


def remove_profile_files(home: Path) -> bool:
    """Delete the profile's files (never anything else); remove ``home`` if then empty.

    Returns True when the directory itself is gone.
    """
    for name in PROFILE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    try:
        home.rmdir()
    except OSError:
        return False
    return True

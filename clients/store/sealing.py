"""Encryption of secret rows at rest: AES-256-GCM under a 32-byte store key.

The store key is either derived from a passphrase with scrypt (n=2**15, r=8, p=1, 16-byte
random salt kept in the database) or read from a key file of 32 random bytes that must not be
readable by group or others (mode 0600). A check value (the AEAD of a constant) tells a wrong
passphrase or key file apart from a corrupted row.

A sealed value is ``0x01 || nonce (12) || ciphertext || tag (16)``; its associated data is
``b"VoxStore-v1" || 0x00 || str16 table || bytes16 row key`` so a row cannot be moved to another
row or table without failing authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from clients.store.errors import KeyFileError, StoreCorrupted
from crypto.encoding import Writer

__all__ = [
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "Sealer",
    "derive_key",
    "load_or_create_key_file",
    "write_key_file",
]

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
KEY_LEN = 32
SALT_LEN = 16
NONCE_LEN = 12
VERSION = 1
_LABEL = b"VoxStore-v1"
_VERSION_BYTE = bytes([VERSION])
CHECK_PLAINTEXT = b"vox local store key check v1"


def derive_key(
    passphrase: str, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    """The 32-byte store key for a passphrase (scrypt, UTF-8 NFC-agnostic bytes)."""
    return Scrypt(salt=salt, length=KEY_LEN, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def load_or_create_key_file(path: Path, *, create: bool) -> bytes:
    """Read the key file (refusing one readable by group/others), or create it with mode 0600."""
    if not path.exists():
        if not create:
            raise KeyFileError(path, "missing (the profile was created with a key file)")
        key = os.urandom(KEY_LEN)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            path, f"permissions {stat.filemode(mode)} are too open; run: chmod 600 {path}"
        )
    key = path.read_bytes()
    if len(key) != KEY_LEN:
        raise KeyFileError(path, f"expected {KEY_LEN} bytes, found {len(key)}")
    return key


def write_key_file(path: Path) -> bytes:
    """Write a fresh random 32-byte key to ``path`` (mode 0600, fsynced), replacing it."""
    key = os.urandom(KEY_LEN)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def row_ad(table: str, row_key: bytes) -> bytes:
    """Associated data binding a sealed value to its table and row:
    ``label || 0x00 || str16 table || bytes16 row key``."""
    prefix = _AD_PREFIX.get(table)
    if prefix is None:
        prefix = _AD_PREFIX[table] = Writer().raw(_LABEL).u8(0).str16(table).finish()
    if len(row_key) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return prefix + len(row_key).to_bytes(2, "big") + row_key


#: ``row_ad``'s constant part per table (a handful of tables: built once each).
_AD_PREFIX: dict[str, bytes] = {}


class Sealer:
    """Seals and opens secret values under the store key."""

    __slots__ = ("_aead", "_search_key")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._search_key = hmac.new(key, b"VoxStore-v1 search tokens", hashlib.sha256).digest()

    @property
    def search_key(self) -> bytes:
        """The key of the search index's word tokens (HMAC-SHA256 of a label under the
        store key: the index is useless without the store key)."""
        return self._search_key

    def __repr__(self) -> str:
        return "Sealer(<secret>)"

    def seal(self, table: str, row_key: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to (table, row_key)."""
        nonce = os.urandom(NONCE_LEN)
        return _VERSION_BYTE + nonce + self._aead.encrypt(nonce, plaintext, row_ad(table, row_key))

    def open(self, table: str, row_key: bytes, sealed: bytes) -> bytes:
        """Decrypt a sealed value; :class:`StoreCorrupted` if it was altered or moved."""
        if len(sealed) < 1 + NONCE_LEN + 16 or sealed[0] != VERSION:
            raise StoreCorrupted(f"malformed encrypted value in {table}")
        nonce, body = sealed[1 : 1 + NONCE_LEN], sealed[1 + NONCE_LEN :]
        try:
            return self._aead.decrypt(nonce, body, row_ad(table, row_key))
        except InvalidTag:
            raise StoreCorrupted(f"an encrypted value in {table} fails authentication") from None

    def check_value(self) -> bytes:
        """A value that only this key opens (stored once, verified on open)."""
        return self.seal("meta", b"check", CHECK_PLAINTEXT)

    def verify_check_value(self, sealed: bytes) -> bool:
        """True if ``sealed`` was made by :meth:`check_value` under this key."""
        try:
            return self.open("meta", b"check", sealed) == CHECK_PLAINTEXT
        except StoreCorrupted:
            return False

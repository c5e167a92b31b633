"""The real :class:`~clients.store.base.Store`: one SQLite file ``<home>/vox.db`` per profile.

Secret columns (private keys, session and sender key states, message bodies, outbox payloads,
secret settings such as the bearer token) are sealed with :class:`~clients.store.sealing.Sealer`
under a key from a passphrase (scrypt) or a 0600 key file ``<home>/vox.key``. The profile is
held with :class:`~clients.store.lock.ProfileLock` for as long as the store is open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clients.store import search
from clients.store.checkpoint import BACKSTOP_PAGES, Checkpointer
from clients.store.errors import KeyFileError, StoreCorrupted, StoreError, WrongPassphrase
from clients.store.lock import ProfileLock
from clients.store.models import (
    GONE_PREFIX,
    Contact,
    ConversationSummary,
    DeliveryState,
    Direction,
    Group,
    OutboxEntry,
    PeerIdentity,
    PrekeyKind,
    PrekeyRecord,
    Profile,
    StoredMessage,
    TrustState,
)
from clients.store.sealing import (
    SALT_LEN,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    Sealer,
    derive_key,
    load_or_create_key_file,
    write_key_file,
)
from crypto.encoding import Reader, Writer
from crypto.errors import DecodeError

__all__ = ["DB_NAME", "KEY_FILE_NAME", "SCHEMA_VERSION", "SqliteStore", "profile_exists"]

DB_NAME = "vox.db"
KEY_FILE_NAME = "vox.key"
NEW_KEY_FILE_NAME = "vox.key.new"
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE profile (
    id INTEGER PRIMARY KEY CHECK (id = 1), server_url TEXT NOT NULL, username TEXT NOT NULL,
    device_id INTEGER NOT NULL, created_at REAL NOT NULL, secret BLOB NOT NULL);
CREATE TABLE prekeys (
    kind TEXT NOT NULL, key_id INTEGER NOT NULL, created_at REAL NOT NULL, secret BLOB NOT NULL,
    PRIMARY KEY (kind, key_id));
CREATE TABLE prekey_ids (kind TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE sessions (
    username TEXT NOT NULL, device_id INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (username, device_id));
CREATE TABLE peers (
    username TEXT PRIMARY KEY, account_key BLOB NOT NULL, trust TEXT NOT NULL,
    previous_account_key BLOB, device_list_version INTEGER NOT NULL, device_list BLOB,
    updated_at REAL NOT NULL);
CREATE TABLE contacts (username TEXT PRIMARY KEY, display_name TEXT NOT NULL,
    added_at REAL NOT NULL);
CREATE TABLE groups (
    group_id TEXT PRIMARY KEY, name TEXT NOT NULL, members TEXT NOT NULL,
    created_by TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE own_sender_keys (group_id TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE sender_keys (
    group_id TEXT NOT NULL, username TEXT NOT NULL, device_id INTEGER NOT NULL,
    state BLOB NOT NULL, PRIMARY KEY (group_id, username, device_id));
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY, conversation TEXT NOT NULL, direction TEXT NOT NULL,
    sender TEXT NOT NULL, sender_device INTEGER NOT NULL, sent_at REAL NOT NULL,
    received_at REAL NOT NULL, state TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX messages_by_conversation ON messages (conversation, sent_at);
CREATE TABLE outbox (
    message_id TEXT PRIMARY KEY, conversation TEXT NOT NULL, created_at REAL NOT NULL,
    attempts INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE seen (message_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE kv (key TEXT PRIMARY KEY, secret INTEGER NOT NULL, value BLOB NOT NULL);
"""

#: Schema 1 -> 2: disappearing-message columns and the keyed search index.
_MIGRATE_2 = """
ALTER TABLE messages ADD COLUMN expires_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expire_at REAL;
CREATE INDEX messages_by_expiry ON messages (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE search_tokens (
    token BLOB NOT NULL, sent_at REAL NOT NULL, message_id TEXT NOT NULL,
    PRIMARY KEY (token, sent_at, message_id)) WITHOUT ROWID;
CREATE INDEX search_tokens_by_message ON search_tokens (message_id, token);
"""

#: Schema 2 -> 3: new messages' search tokens are appended to ``search_pending`` (a rowid
#: table: each commit writes to its last page) and moved into ``search_tokens`` (random keys:
#: a page per token, ~70 % of the pages a burst's commit wrote) in batches (:meth:`_merge_tokens`).
_MIGRATE_3 = """
CREATE TABLE search_pending (token BLOB NOT NULL, sent_at REAL NOT NULL, message_id TEXT NOT NULL);
"""

_PROFILE_ROW = b"profile"

#: Every sealed column: (table, column, primary key columns giving the row key, filter).
#: Ids per ``IN (...)`` list (SQLite allows 32,766 parameters; old builds 999).
_IN_CHUNK = 500
#: Parameters per multi-row INSERT at most (search tokens: 300 rows of three).
_ROW_PARAMS = 900
#: New messages (one row: :data:`_ADD_MESSAGE`; a burst: :meth:`SqliteStore.add_messages`).
_ADD_MESSAGES = (
    "INSERT OR IGNORE INTO messages (message_id, conversation, direction, sender,"
    " sender_device, sent_at, received_at, state, body, expires_in, expire_at) VALUES"
)
_ADD_MESSAGE = _ADD_MESSAGES + " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Pending search tokens (``search_pending`` rows) at which a commit moves them into the index
#: (~680 messages of three words; a move of 2,048 rows takes a few ms, see docs/client-store.md).
MERGE_TOKENS = 2048

_SEALED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("profile", "secret", (), ""),
    ("prekeys", "secret", ("kind", "key_id"), ""),
    ("sessions", "state", ("username", "device_id"), ""),
    ("own_sender_keys", "state", ("group_id",), ""),
    ("sender_keys", "state", ("group_id", "username", "device_id"), ""),
    ("messages", "body", ("message_id",), ""),
    ("outbox", "payload", ("message_id",), ""),
    ("kv", "value", ("key",), " WHERE secret = 1"),
)


def profile_exists(home: Path) -> bool:
    """Whether ``home`` holds a store database."""
    return (home / DB_NAME).exists()


def _rk(*parts: str | int) -> bytes:
    """The row key (for the AEAD's associated data) of a row with these primary key parts:
    per part ``0x00 || str16`` (text) or ``0x01 || u64`` (integer)."""
    if len(parts) == 1 and type(parts[0]) is str:  # a message id: the common case
        text = parts[0].encode("utf-8")
        if len(text) <= 0xFFFF:
            return b"\x00" + len(text).to_bytes(2, "big") + text
    w = Writer()
    for part in parts:
        if isinstance(part, int):
            w.u8(1).u64(part)
        else:
            w.u8(0).str16(part)
    return w.finish()


class _Transaction:
    """One ``with store.transaction():`` block. A class rather than a generator context
    manager: nearly every store call enters one (nested: a depth count under the mutex).
    ``BEGIN IMMEDIATE`` is issued by the block's first statement (:meth:`SqliteStore._exec`):
    a block that runs none (everything it did was cached or deferred to nothing) costs no
    ``BEGIN``/``COMMIT``."""

    __slots__ = ("_changes", "_store", "_sync")

    def __init__(self, store: SqliteStore, sync: bool) -> None:
        self._store = store
        self._sync = sync
        self._changes = -1  # the outermost block: total_changes at its BEGIN

    def __enter__(self) -> None:
        store = self._store
        store._mutex.acquire()
        if store._depth:
            store._depth += 1
            return
        self._changes = store._conn.total_changes
        store._begun = False
        store._depth = 1

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        store = self._store
        try:
            if self._changes < 0:
                store._depth -= 1
            else:
                store._end(kind is not None, self._changes, self._sync)
        finally:
            store._mutex.release()


class SqliteStore:
    """An open profile store. Use :meth:`open`; close it (or use ``with``) to release the lock."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sealer: Sealer,
        lock: ProfileLock,
        path: Path,
        *,
        wal: bool = False,
    ) -> None:
        self._conn = conn
        self._sealer = sealer
        self._lock = lock
        self.path = path
        #: The write-ahead log :meth:`flush` fsyncs (None: not in WAL mode, commits sync).
        self._wal = path.with_name(path.name + "-wal") if wal else None
        #: Checkpoints the WAL in its own thread (None: not in WAL mode).
        self._checkpointer = Checkpointer(path) if wal else None
        self._mutex = threading.RLock()
        self._depth = 0
        #: Whether the open transaction has run its ``BEGIN IMMEDIATE`` (see _Transaction).
        self._begun = False
        #: Changing commits so far (counted on the committing thread) and how many of them
        #: an fsync is known to cover: :meth:`flush` skips the fsync when it would cover
        #: nothing new. The first is 1 at open: what an earlier process left may not be synced.
        self._commits = 1
        self._synced = 0
        self._synced_lock = threading.Lock()
        #: The WAL's file descriptor, opened by the first flush that finds the file and kept
        #: until :meth:`close` (two system calls less per fsync, and two fewer GIL hand-offs
        #: in the flushing thread); ``-1`` once closed. Used under ``_synced_lock``.
        self._wal_fd: int | None = None
        # Read-through caches of the rows read on every message (this process holds the
        # profile lock, so nobody else writes them); dropped whenever a transaction rolls back.
        self._peers: dict[str, PeerIdentity | None] = {}
        self._sessions: dict[tuple[str, int], bytes | None] = {}
        # Session states written in the open transaction, sealed and written once at its
        # commit (a burst advances one session many times; only its last state is kept).
        self._dirty_sessions: dict[tuple[str, int], bytes] = {}
        # Other rows written at the commit of the open transaction, in one statement each
        # for the whole transaction rather than one per message: the search tokens of new
        # messages (by message id), outbox entries to insert (by message id: a burst's new
        # sends in one multi-row INSERT), outbox attempts to count, outbox entries to remove.
        self._new_tokens: dict[str, list[tuple[bytes, float, str]]] = {}
        #: Rows in ``search_pending`` (None: not counted since opening or a rollback).
        self._pending: int | None = None
        self._puts: dict[str, OutboxEntry] = {}
        self._attempts: dict[str, int] = {}
        self._removed: set[str] = set()
        self._settings: dict[str, str | None] = {}
        #: Whether any message was deleted for me (``gone:`` seen ids); ``None``: not read yet.
        self._any_gone: bool | None = None
        self._secrets: dict[str, bytes | None] = {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        home: Path | str,
        *,
        passphrase: str | None = None,
        lock_timeout: float = 0.0,
        create: bool = True,
    ) -> SqliteStore:
        """Open (or create) the store of the profile in ``home``.

        Raises :class:`ProfileLocked` if another process holds the profile for longer than
        ``lock_timeout`` seconds, :class:`WrongPassphrase`, :class:`KeyFileError`,
        :class:`StoreCorrupted`, or :class:`StoreError` if there is no profile and not ``create``.
        """
        home = Path(home)
        if not home.exists():
            if not create:
                raise StoreError(f"no Vox profile at {home}")
            home.mkdir(mode=0o700, parents=True)
        lock = ProfileLock(home)
        lock.acquire(lock_timeout)
        conn: sqlite3.Connection | None = None
        store: SqliteStore | None = None
        try:
            path = home / DB_NAME
            fresh = not path.exists()
            if fresh and not create:
                raise StoreError(f"no Vox profile at {home}")
            if fresh:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
                # In WAL mode FULL = NORMAL + an fsync of the WAL after each commit; that
                # fsync is ours (``flush``), so commits can share one, off the event loop.
                conn.execute(f"PRAGMA synchronous={'NORMAL' if wal else 'FULL'}")
                # Checkpoints run in the checkpointer's thread, not inside COMMIT; SQLite's
                # own remains only as a backstop (clients/store/checkpoint.py).
                conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
                conn.execute("PRAGMA foreign_keys=ON")
                has_meta = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
                ).fetchone()
                if has_meta is None:
                    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                        raise StoreCorrupted(f"{path} is not a Vox store")
                    sealer = cls._initialize(conn, home, passphrase)
                else:
                    sealer = cls._unlock(conn, home, passphrase)
            except sqlite3.DatabaseError as exc:
                raise StoreCorrupted(f"{path}: {exc}") from None
            store = cls(conn, sealer, lock, path, wal=wal)
            store._migrate()
            if fresh:
                store.flush()  # the schema's commit
            return store
        except BaseException:
            if store is not None and store._checkpointer is not None:
                store._checkpointer.close()
            if conn is not None:
                conn.close()
            lock.release()
            raise

    @staticmethod
    def _key_and_meta(
        home: Path, passphrase: str | None, *, new_key_file: bool = False
    ) -> tuple[Sealer, dict[str, bytes]]:
        """A store key (new scrypt salt, or the key file) and the meta rows describing it.

        With ``new_key_file`` a fresh key is written to ``vox.key.new`` (see
        :meth:`change_passphrase`) instead of reading or creating ``vox.key``.
        """
        meta: dict[str, bytes] = {}
        if passphrase is not None:
            if not passphrase:
                raise WrongPassphrase("the passphrase must not be empty")
            salt = os.urandom(SALT_LEN)
            key = derive_key(passphrase, salt)
            meta |= {
                "kdf": b"scrypt",
                "salt": salt,
                "scrypt": f"{SCRYPT_N},{SCRYPT_R},{SCRYPT_P}".encode(),
            }
        elif new_key_file:
            key = write_key_file(home / NEW_KEY_FILE_NAME)
            meta["kdf"] = b"keyfile"
        else:
            key = load_or_create_key_file(home / KEY_FILE_NAME, create=True)
            meta["kdf"] = b"keyfile"
        sealer = Sealer(key)
        meta["check"] = sealer.check_value()
        return sealer, meta

    @classmethod
    def _initialize(cls, conn: sqlite3.Connection, home: Path, passphrase: str | None) -> Sealer:
        sealer, meta = cls._key_and_meta(home, passphrase)
        meta["schema_version"] = str(SCHEMA_VERSION).encode()
        try:
            # executescript() commits first, so the transaction is opened inside the script.
            conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + _MIGRATE_2 + _MIGRATE_3)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return sealer

    @staticmethod
    def _unlock(conn: sqlite3.Connection, home: Path, passphrase: str | None) -> Sealer:
        meta = {k: bytes(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        try:
            version = int(meta["schema_version"])
            kdf = meta["kdf"].decode()
            check = meta["check"]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise StoreCorrupted(f"store metadata is damaged ({exc!r})") from None
        if not 1 <= version <= SCHEMA_VERSION:
            raise StoreCorrupted(f"unsupported store schema version {version}")
        if kdf == "scrypt":
            if passphrase is None:
                raise WrongPassphrase("this profile is protected by a passphrase; none was given")
            try:
                n, r, p = (int(x) for x in meta["scrypt"].decode().split(","))
                salt = meta["salt"]
            except (KeyError, ValueError) as exc:
                raise StoreCorrupted(f"store metadata is damaged ({exc!r})") from None
            # Refuse parameters weakened (or inflated to exhaust memory) by tampering.
            if not (2**14 <= n <= 2**20 and n & (n - 1) == 0 and 8 <= r <= 32 and 1 <= p <= 16):
                raise StoreCorrupted(f"scrypt parameters out of bounds (n={n}, r={r}, p={p})")
            sealer = Sealer(derive_key(passphrase, salt, n=n, r=r, p=p))
            if not sealer.verify_check_value(check):
                raise WrongPassphrase("wrong passphrase for this profile")
            return sealer
        if kdf == "keyfile":
            if passphrase is not None:
                raise WrongPassphrase("this profile uses a key file, not a passphrase")
            path, pending = home / KEY_FILE_NAME, home / NEW_KEY_FILE_NAME
            sealer = Sealer(load_or_create_key_file(path, create=False))
            if sealer.verify_check_value(check):
                pending.unlink(missing_ok=True)  # a key change that never committed
                return sealer
            if pending.exists():  # a key change committed, the rename did not happen
                sealer = Sealer(load_or_create_key_file(pending, create=False))
                if sealer.verify_check_value(check):
                    os.replace(pending, path)
                    return sealer
            raise KeyFileError(path, "does not open this store")
        raise StoreCorrupted(f"unknown key derivation {kdf!r}")

    def _migrate(self) -> None:
        """Bring an older store to :data:`SCHEMA_VERSION` (in one transaction)."""
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        version = int(bytes(row[0]))
        if version >= SCHEMA_VERSION:
            return
        with self.transaction():
            steps = (_MIGRATE_2 if version < 2 else "") + _MIGRATE_3
            for statement in steps.split(";"):
                if statement.strip():
                    self._exec(statement)
            if version < 2:
                self._reindex()
            self._exec(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION).encode(),),
            )

    def _reindex(self) -> None:
        """Rebuild the search index from the decrypted messages (after a migration or a
        change of store key)."""
        self._new_tokens.clear()  # recomputed below from the messages
        self._exec("DELETE FROM search_tokens")
        self._exec("DELETE FROM search_pending")
        self._pending = 0
        for row in self._exec("SELECT * FROM messages").fetchall():
            self._index(self._message(row))

    def _index(self, message: StoredMessage, *, fresh: bool = False) -> None:
        """(Re)index ``message``: a new one's tokens are written at the commit, with every
        other new message's of the transaction (:meth:`_write_tokens`)."""
        if not fresh:  # a new message has no tokens yet (deleting one deletes its tokens)
            self._drop_tokens(message.message_id)
        found = search.tokens(
            self._sealer.search_key, search.words(search.searchable_text(message))
        )
        rows = [(t, message.sent_at, message.message_id) for t in sorted(found)]
        if fresh:
            self._new_tokens[message.message_id] = rows
        else:
            self._insert_rows("INSERT OR IGNORE INTO search_tokens VALUES", rows)

    def _write_tokens(self) -> None:
        """Append the search tokens of the open transaction's new messages to
        ``search_pending`` (before its COMMIT, or before a statement that reads the index);
        move them into the index once :data:`MERGE_TOKENS` are pending."""
        if not self._new_tokens:
            return
        rows = [row for rows in self._new_tokens.values() for row in rows]
        self._new_tokens.clear()
        self._insert_rows("INSERT INTO search_pending VALUES", rows)
        if self._pending is None:
            self._pending = int(self._exec("SELECT count(*) FROM search_pending").fetchone()[0])
        else:
            self._pending += len(rows)
        if self._pending >= MERGE_TOKENS:
            self._merge_tokens()

    def _merge_tokens(self) -> None:
        """Move the pending search tokens into ``search_tokens`` (in the open transaction):
        before anything reads or deletes index rows. One pass over the index's random keys
        for many messages' tokens, not one per commit."""
        if self._pending != 0:  # None: not known, the statements below find out
            self._exec(
                "INSERT OR IGNORE INTO search_tokens SELECT token, sent_at, message_id"
                " FROM search_pending ORDER BY token, sent_at, message_id"
            )
            self._exec("DELETE FROM search_pending")
            self._pending = 0

    def _drop_tokens(self, message_id: str) -> None:
        """Delete a message's search tokens (written, pending, or not yet written)."""
        self._new_tokens.pop(message_id, None)
        self._merge_tokens()
        self._exec("DELETE FROM search_tokens WHERE message_id = ?", (message_id,))

    def _write_outbox(self) -> None:
        """Write the open transaction's new outbox entries, attempts and removals (before its
        COMMIT, or before a statement that reads the table): one statement each, usually."""
        puts, self._puts = list(self._puts.values()), {}
        self._insert_rows(
            "INSERT OR REPLACE INTO outbox VALUES",
            [
                (e.message_id, e.conversation, e.created_at, e.attempts,
                 self._seal("outbox", _rk(e.message_id), e.payload))
                for e in puts
            ],
        )  # fmt: skip
        attempts, self._attempts = self._attempts, {}
        removed, self._removed = list(self._removed), set()
        by_count: dict[int, list[str]] = {}
        for message_id, n in attempts.items():
            by_count.setdefault(n, []).append(message_id)
        for n, ids in by_count.items():
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                self._exec(
                    f"UPDATE outbox SET attempts = attempts + ? WHERE message_id IN"  # noqa: S608
                    f" ({', '.join('?' * len(chunk))})",
                    [n, *chunk],
                )
        for start in range(0, len(removed), _IN_CHUNK):
            chunk = removed[start : start + _IN_CHUNK]
            self._exec(
                f"DELETE FROM outbox WHERE message_id IN ({', '.join('?' * len(chunk))})",  # noqa: S608
                chunk,
            )

    def _write_pending(self) -> None:
        """Every row the open transaction left for its commit."""
        self._write_sessions()
        self._write_tokens()
        if self._puts or self._attempts or self._removed:
            self._write_outbox()

    def change_passphrase(self, passphrase: str | None) -> None:
        """Re-encrypt every secret under a new key: from ``passphrase``, or (None) a key file.

        One transaction: a crash leaves the old key (and passphrase) in force. Switching to a
        passphrase deletes the key file; switching to a key file writes a fresh one first.
        Old ciphertext may survive in free pages of the file until SQLite reuses them.
        """
        home = self.path.parent
        new_sealer, meta = self._key_and_meta(home, passphrase, new_key_file=True)
        with self.transaction():
            self._write_pending()
            for table, column, pk, where in _SEALED:
                cols = ", ".join(("rowid", *pk, column))
                rows = self._exec(f"SELECT {cols} FROM {table}{where}").fetchall()  # noqa: S608
                for rowid, *key, sealed in rows:
                    row = _rk(*key) if pk else _PROFILE_ROW
                    plain = self._open(table, row, sealed)
                    self._exec(
                        f"UPDATE {table} SET {column} = ? WHERE rowid = ?",  # noqa: S608
                        (new_sealer.seal(table, row, plain), rowid),
                    )
            self._exec("DELETE FROM meta WHERE key IN ('kdf', 'salt', 'scrypt', 'check')")
            for name, value in meta.items():
                self._exec("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value))
            self._sealer, old = new_sealer, self._sealer
            try:
                self._reindex()  # tokens are keyed by the store key
            except BaseException:
                self._sealer = old
                raise
            search.forget(old.search_key)
        if passphrase is None:
            os.replace(home / NEW_KEY_FILE_NAME, home / KEY_FILE_NAME)
        else:
            (home / KEY_FILE_NAME).unlink(missing_ok=True)

    def checkpoint(self) -> tuple[int, int, int]:
        """A passive WAL checkpoint on the checkpointer's connection, in the calling thread
        (it copies and fsyncs: not on the event loop). SQLite's (busy, WAL frames, frames
        checkpointed); ``(0, -1, -1)`` if the store is not in WAL mode."""
        if self._checkpointer is None:
            return (0, -1, -1)
        try:
            return self._checkpointer.checkpoint()
        except sqlite3.Error as exc:
            raise StoreError(f"local store: checkpoint: {exc}") from None

    def close(self) -> None:
        """Checkpoint and truncate the WAL, close the database and release the profile lock
        (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._mutex:
            with contextlib.suppress(sqlite3.Error):
                if self._wal is not None and not self._depth:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            with self._synced_lock:  # after a running fsync
                fd, self._wal_fd = self._wal_fd, -1
                if fd is not None and fd >= 0:
                    os.close(fd)
            search.forget(self._sealer.search_key)  # no words or key state left in memory
            self._lock.release()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # ------------------------------------------------------------------ plumbing

    def transaction(self, *, sync: bool = True) -> _Transaction:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back if the block raises; nesting joins.

        The commit is in the WAL when the block returns (it survives the process being
        killed); with ``sync`` (and if it changed anything) the WAL is also fsynced before
        returning, otherwise that is :meth:`flush`'s job.
        """
        return _Transaction(self, sync)

    def _end(self, error: bool, changes: int, sync: bool) -> None:
        """End the outermost transaction (mutex held): roll back after an ``error``, else
        write the pending sessions and commit (rolled back if that fails), then fsync."""
        try:
            if error:
                self._forget_cached()
                if self._begun:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                return
            try:
                self._write_pending()
                if self._begun:
                    self._exec("COMMIT")
            except BaseException:
                self._forget_cached()
                if self._begun:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise
        finally:
            self._depth = 0
            self._begun = False
        if self._conn.total_changes != changes:
            self._commits += 1
            if self._checkpointer is not None:
                self._checkpointer.committed()
            if sync:
                self.flush()

    def _forget_cached(self) -> None:
        self._peers.clear()
        self._sessions.clear()
        self._dirty_sessions.clear()
        self._new_tokens.clear()
        self._pending = None
        self._puts.clear()
        self._attempts.clear()
        self._removed.clear()
        self._settings.clear()
        self._secrets.clear()

    def flush(self) -> None:
        """fsync the WAL: every commit so far is durable. Needs no connection (and no mutex),
        so it runs in another thread while the event loop keeps using the store. No fsync
        when no changing commit came since the start of the last one that completed."""
        wal = self._wal
        if wal is None:
            return
        commits = self._commits  # read before the fsync: what it is sure to cover
        if commits <= self._synced:
            return
        with self._synced_lock:
            fd = self._wal_fd
            if fd is None or fd < 0:
                try:
                    fd = os.open(wal, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:  # no WAL yet, or deleted on close: nothing to sync
                    return
                if self._wal_fd is None:  # kept while the store is open
                    self._wal_fd = fd
            try:
                os.fsync(fd)
            finally:
                if fd != self._wal_fd:
                    os.close(fd)
            self._synced = max(self._synced, commits)

    def synced(self) -> bool:
        """Whether an fsync that completed started after the last changing commit (or the
        commits sync themselves: not in WAL mode). Read on the committing thread: a stale
        ``_synced`` only answers False."""
        return self._wal is None or self._commits <= self._synced

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            if self._depth and not self._begun:  # the open transaction's first statement
                # ~4-7 µs of CPU (locks: a few fcntl calls); a deferred BEGIN only moves that
                # to the first write (one connection writes). Sampling profilers show it high
                # because it is often the first call to release the GIL after a stretch of
                # Python: a thread waiting for the GIL (the fsync's) runs, and this waits.
                self._conn.execute("BEGIN IMMEDIATE")
                self._begun = True
            return self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"local store: {exc}") from None
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(str(exc)) from None

    def _insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> list[Any]:
        """``head`` (``INSERT … VALUES``) for all ``rows``, then ``tail`` (an upsert or a
        ``RETURNING`` clause): one statement, or one per :data:`_ROW_PARAMS` parameters.
        Returns the rows a ``RETURNING`` clause gives."""
        out: list[Any] = []
        if not rows:
            return out
        width = len(rows[0])
        per = _ROW_PARAMS // width
        marks = "(" + ", ".join("?" * width) + ")"
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            values = ", ".join([marks] * len(chunk))
            cursor = self._exec(f"{head} {values}{tail}", [value for row in chunk for value in row])
            if tail:
                out += cursor.fetchall()
        return out

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._mutex:
            return self._exec(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._mutex:
            return self._exec(sql, params).fetchall()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction():
            return self._exec(sql, params).rowcount

    def _seal(self, table: str, row: bytes, data: bytes) -> bytes:
        return self._sealer.seal(table, row, data)

    def _open(self, table: str, row: bytes, sealed: Any) -> bytes:
        if not isinstance(sealed, bytes):
            raise StoreCorrupted(f"an encrypted value in {table} has the wrong type")
        return self._sealer.open(table, row, sealed)

    # ------------------------------------------------------------------ profile

    def load_profile(self) -> Profile | None:
        row = self._one("SELECT server_url, username, device_id, created_at, secret FROM profile")
        if row is None:
            return None
        raw = self._open("profile", _PROFILE_ROW, row[4])
        try:
            r = Reader(raw)
            r.version(1)
            keys = [r.bytes32("key", 1 << 16) for _ in range(3)]
            r.end()
        except DecodeError as exc:
            raise StoreCorrupted(f"profile keys: {exc}") from None
        return Profile(row[0], row[1], row[2], keys[0], keys[1], keys[2], row[3])

    def save_profile(self, profile: Profile) -> None:
        w = Writer().u8(1)
        for key in (profile.account_key, profile.identity_key, profile.auth_key):
            w.bytes32(key)
        secret = self._seal("profile", _PROFILE_ROW, w.finish())
        self._write(
            "INSERT OR REPLACE INTO profile VALUES (1, ?, ?, ?, ?, ?)",
            (profile.server_url, profile.username, profile.device_id, profile.created_at, secret),
        )

    # ------------------------------------------------------------------ prekeys

    def _prekey(self, kind: PrekeyKind, row: Any) -> PrekeyRecord:
        key_id, created_at, sealed = row
        return PrekeyRecord(
            kind, key_id, self._open("prekeys", _rk(kind, key_id), sealed), created_at
        )

    def put_prekeys(self, records: Iterable[PrekeyRecord]) -> None:
        with self.transaction():
            for rec in records:
                kind = PrekeyKind(rec.kind)
                self._exec(
                    "INSERT OR REPLACE INTO prekeys VALUES (?, ?, ?, ?)",
                    (
                        kind.value,
                        rec.key_id,
                        rec.created_at,
                        self._seal("prekeys", _rk(kind, rec.key_id), rec.secret),
                    ),
                )
                self._exec(
                    "INSERT INTO prekey_ids VALUES (?, ?) ON CONFLICT (kind) DO UPDATE"
                    " SET last_id = max(last_id, excluded.last_id)",
                    (kind.value, rec.key_id),
                )

    def get_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        row = self._one(
            "SELECT key_id, created_at, secret FROM prekeys WHERE kind = ? AND key_id = ?",
            (kind.value, key_id),
        )
        return None if row is None else self._prekey(kind, row)

    def consume_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        with self.transaction():
            rec = self.get_prekey(kind, key_id)
            if rec is not None:
                self.delete_prekey(kind, key_id)
            return rec

    def delete_prekey(self, kind: PrekeyKind, key_id: int) -> None:
        self._write("DELETE FROM prekeys WHERE kind = ? AND key_id = ?", (kind.value, key_id))

    def list_prekeys(self, kind: PrekeyKind) -> list[PrekeyRecord]:
        rows = self._all(
            "SELECT key_id, created_at, secret FROM prekeys WHERE kind = ? ORDER BY key_id",
            (kind.value,),
        )
        return [self._prekey(kind, row) for row in rows]

    def next_prekey_id(self, kind: PrekeyKind) -> int:
        row = self._one("SELECT last_id FROM prekey_ids WHERE kind = ?", (kind.value,))
        return 1 if row is None else int(row[0]) + 1

    # ------------------------------------------------------------------ sessions

    def load_session(self, username: str, device_id: int) -> bytes | None:
        with self._mutex:
            key = (username, device_id)
            if key in self._sessions:
                return self._sessions[key]
            row = self._one("SELECT state FROM sessions WHERE username = ? AND device_id = ?", key)
            state = None if row is None else self._open("sessions", _rk(*key), row[0])
            self._sessions[key] = state
            return state

    def store_session(self, username: str, device_id: int, state: bytes) -> None:
        with self.transaction():  # written at its commit (_write_sessions)
            self._sessions[(username, device_id)] = state
            self._dirty_sessions[(username, device_id)] = state

    def _write_sessions(self) -> None:
        """Seal and write the session states of the open transaction (before its COMMIT, or
        before a statement that reads the table)."""
        if not self._dirty_sessions:
            return
        rows = [
            (username, device_id, self._seal("sessions", _rk(username, device_id), state))
            for (username, device_id), state in self._dirty_sessions.items()
        ]
        self._dirty_sessions.clear()
        # Updated in place: REPLACE would delete the row and append it again (two more pages
        # per commit: the old row's and the table's last).
        self._insert_rows(
            "INSERT INTO sessions VALUES",
            rows,
            " ON CONFLICT (username, device_id) DO UPDATE SET state = excluded.state",
        )

    def delete_session(self, username: str, device_id: int) -> None:
        with self.transaction():
            self._dirty_sessions.pop((username, device_id), None)
            self._exec(
                "DELETE FROM sessions WHERE username = ? AND device_id = ?", (username, device_id)
            )
            self._sessions[(username, device_id)] = None

    def session_devices(self, username: str) -> list[int]:
        with self._mutex:
            self._write_sessions()
            rows = self._all(
                "SELECT device_id FROM sessions WHERE username = ? ORDER BY device_id", (username,)
            )
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------------ peers

    @staticmethod
    def _peer(row: Any) -> PeerIdentity:
        try:
            trust = TrustState(row[2])
        except ValueError:
            raise StoreCorrupted(f"peer {row[0]!r} has trust state {row[2]!r}") from None
        return PeerIdentity(row[0], bytes(row[1]), trust, row[3], row[4], row[5], row[6])

    def get_peer(self, username: str) -> PeerIdentity | None:
        with self._mutex:
            if username in self._peers:
                return self._peers[username]
            row = self._one("SELECT * FROM peers WHERE username = ?", (username,))
            peer = None if row is None else self._peer(row)
            self._peers[username] = peer
            return peer

    def put_peer(self, peer: PeerIdentity) -> None:
        with self.transaction():
            self._exec(
                "INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    peer.username,
                    peer.account_key,
                    TrustState(peer.trust).value,
                    peer.previous_account_key,
                    peer.device_list_version,
                    peer.device_list,
                    peer.updated_at,
                ),
            )
            self._peers[peer.username] = peer

    def list_peers(self) -> list[PeerIdentity]:
        return [self._peer(r) for r in self._all("SELECT * FROM peers ORDER BY username")]

    # ------------------------------------------------------------------ contacts

    def put_contact(self, contact: Contact) -> None:
        self._write(
            "INSERT OR REPLACE INTO contacts VALUES (?, ?, ?)",
            (contact.username, contact.display_name, contact.added_at),
        )

    def delete_contact(self, username: str) -> None:
        self._write("DELETE FROM contacts WHERE username = ?", (username,))

    def list_contacts(self) -> list[Contact]:
        return [Contact(*r) for r in self._all("SELECT * FROM contacts ORDER BY username")]

    # ------------------------------------------------------------------ groups

    @staticmethod
    def _group(row: Any) -> Group:
        try:
            members = json.loads(row[2])
        except ValueError:
            raise StoreCorrupted(f"group {row[0]!r} has a damaged member list") from None
        return Group(row[0], row[1], tuple(members), row[3], row[4])

    def put_group(self, group: Group) -> None:
        self._write(
            "INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?, ?)",
            (
                group.group_id,
                group.name,
                json.dumps(list(group.members)),
                group.created_by,
                group.created_at,
            ),
        )

    def get_group(self, group_id: str) -> Group | None:
        row = self._one("SELECT * FROM groups WHERE group_id = ?", (group_id,))
        return None if row is None else self._group(row)

    def list_groups(self) -> list[Group]:
        return [self._group(r) for r in self._all("SELECT * FROM groups ORDER BY name, group_id")]

    def delete_group(self, group_id: str) -> None:
        with self.transaction():
            self._exec("DELETE FROM groups WHERE group_id = ?", (group_id,))
            self._exec("DELETE FROM own_sender_keys WHERE group_id = ?", (group_id,))
            self._exec("DELETE FROM sender_keys WHERE group_id = ?", (group_id,))

    def load_own_sender_key(self, group_id: str) -> bytes | None:
        row = self._one("SELECT state FROM own_sender_keys WHERE group_id = ?", (group_id,))
        return None if row is None else self._open("own_sender_keys", _rk(group_id), row[0])

    def store_own_sender_key(self, group_id: str, state: bytes) -> None:
        sealed = self._seal("own_sender_keys", _rk(group_id), state)
        self._write("INSERT OR REPLACE INTO own_sender_keys VALUES (?, ?)", (group_id, sealed))

    def load_sender_key(self, group_id: str, username: str, device_id: int) -> bytes | None:
        row = self._one(
            "SELECT state FROM sender_keys WHERE group_id = ? AND username = ? AND device_id = ?",
            (group_id, username, device_id),
        )
        if row is None:
            return None
        return self._open("sender_keys", _rk(group_id, username, device_id), row[0])

    def store_sender_key(self, group_id: str, username: str, device_id: int, state: bytes) -> None:
        sealed = self._seal("sender_keys", _rk(group_id, username, device_id), state)
        self._write(
            "INSERT OR REPLACE INTO sender_keys VALUES (?, ?, ?, ?)",
            (group_id, username, device_id, sealed),
        )

    def delete_sender_keys(self, group_id: str, username: str | None = None) -> None:
        if username is None:
            self._write("DELETE FROM sender_keys WHERE group_id = ?", (group_id,))
        else:
            self._write(
                "DELETE FROM sender_keys WHERE group_id = ? AND username = ?", (group_id, username)
            )

    def prune_device_sender_keys(self, username: str, keep: Iterable[int]) -> int:
        kept = set(keep)
        rows = self._all(
            "SELECT DISTINCT device_id FROM sender_keys WHERE username = ?", (username,)
        )
        gone = [int(r[0]) for r in rows if int(r[0]) not in kept]
        deleted = 0
        for device_id in gone:
            deleted += self._write(
                "DELETE FROM sender_keys WHERE username = ? AND device_id = ?",
                (username, device_id),
            )
        return deleted

    # ------------------------------------------------------------------ messages

    def _message(self, row: Any) -> StoredMessage:
        body = self._open("messages", _rk(row[0]), row[8])
        try:
            content = json.loads(body)
            direction, state = Direction(row[2]), DeliveryState(row[7])
        except ValueError:
            raise StoreCorrupted(f"message {row[0]!r} is damaged") from None
        reply, timer = content.get("reply"), content.get("timer")
        if timer is not None and not isinstance(timer, int):
            raise StoreCorrupted(f"message {row[0]!r} is damaged")
        return StoredMessage(
            row[0],
            row[1],
            direction,
            row[3],
            row[4],
            row[5],
            row[6],
            content.get("text"),
            content.get("attachment"),
            state,
            edits=tuple(content.get("edits", ())),
            deleted=bool(content.get("deleted", False)),
            reply=None if reply is None else (str(reply[0]), str(reply[1]), str(reply[2])),
            reactions=tuple((str(u), str(e)) for u, e in content.get("reactions", ())),
            expires_in=int(row[9]),
            expire_at=row[10],
            timer=timer,
        )

    def _body(self, message: StoredMessage) -> bytes:
        body: dict[str, object] = {"text": message.text, "attachment": message.attachment}
        if message.edits:
            body["edits"] = list(message.edits)
        if message.deleted:
            body["deleted"] = True
        if message.reply is not None:
            body["reply"] = list(message.reply)
        if message.reactions:
            body["reactions"] = [list(r) for r in message.reactions]
        if message.timer is not None:
            body["timer"] = message.timer
        return self._seal("messages", _rk(message.message_id), json.dumps(body).encode())

    def _message_row(self, m: StoredMessage) -> tuple[Any, ...]:
        """The ``messages`` row of a new message (columns as in :data:`_ADD_MESSAGES`)."""
        return (
            m.message_id, m.conversation, Direction(m.direction).value, m.sender,
            m.sender_device, m.sent_at, m.received_at, DeliveryState(m.state).value,
            self._body(m), m.expires_in, m.expire_at,
        )  # fmt: skip

    def add_message(self, message: StoredMessage) -> bool:
        row = self._message_row(message)
        with self.transaction():
            added = self._exec(_ADD_MESSAGE, row).rowcount == 1
            if added:
                self._index(message, fresh=True)
            return added

    def add_messages(self, messages: Sequence[StoredMessage]) -> list[bool]:
        first: dict[str, int] = {}  # an id given twice: its first row (as add_message would)
        for i, message in enumerate(messages):
            first.setdefault(message.message_id, i)
        new = [messages[i] for i in first.values()]
        rows = [self._message_row(m) for m in new]
        with self.transaction():
            returned = self._insert_rows(_ADD_MESSAGES, rows, " RETURNING message_id")
            added = {row[0] for row in returned}
            for message in new:
                if message.message_id in added:
                    self._index(message, fresh=True)
        return [first[m.message_id] == i and m.message_id in added for i, m in enumerate(messages)]

    def replace_message(self, message: StoredMessage) -> bool:
        with self.transaction():
            changed = self._exec(
                "UPDATE messages SET state = ?, body = ?, expires_in = ?, expire_at = ?"
                " WHERE message_id = ?",
                (
                    DeliveryState(message.state).value,
                    self._body(message),
                    message.expires_in,
                    message.expire_at,
                    message.message_id,
                ),
            ).rowcount
            if changed:
                self._index(message)
            return changed == 1

    def delete_message(self, message_id: str) -> bool:
        with self.transaction():
            self._drop_tokens(message_id)
            return (
                self._exec("DELETE FROM messages WHERE message_id = ?", (message_id,)).rowcount == 1
            )

    def forget_message(self, message_id: str, at: float) -> bool:
        with self.transaction():
            self._any_gone = True  # a rollback leaves it set: only a lookup too many
            self.mark_seen(GONE_PREFIX + message_id, at)
            return self.delete_message(message_id)

    def is_gone(self, message_id: str) -> bool:
        # Asked for every received message: a profile that never deleted one for itself
        # (the usual case) answers from memory instead of a lookup per message.
        if self._any_gone is None:
            self._any_gone = (
                self._one(
                    "SELECT 1 FROM seen WHERE message_id >= ? AND message_id < ? LIMIT 1",
                    (GONE_PREFIX, GONE_PREFIX[:-1] + chr(ord(GONE_PREFIX[-1]) + 1)),
                )
                is not None
            )
        return self._any_gone and self.is_seen(GONE_PREFIX + message_id)

    def expired_messages(self, now: float) -> list[StoredMessage]:
        rows = self._all(
            "SELECT * FROM messages WHERE expire_at IS NOT NULL AND expire_at <= ?"
            " ORDER BY expire_at",
            (now,),
        )
        return [self._message(r) for r in rows]

    def search_messages(
        self, query: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        wanted = search.words(query)
        if not wanted or limit <= 0:
            return []
        first, *others = sorted(search.tokens(self._sealer.search_key, wanted))
        # Newest first along the first word's index range; the other words are index lookups;
        # stops after LIMIT rows (deleted messages have no tokens; collisions are rare).
        sql = (
            "SELECT m.* FROM search_tokens t JOIN messages m ON m.message_id = t.message_id"  # noqa: S608
            " WHERE t.token = ?" + " AND EXISTS (SELECT 1 FROM search_tokens u"
            " WHERE u.message_id = t.message_id AND u.token = ?)"
            * len(others)
            + (" AND m.conversation = ?" if conversation is not None else "")
            + " ORDER BY t.sent_at DESC, t.message_id DESC LIMIT ?"
        )
        params: list[Any] = [first, *others]
        if conversation is not None:
            params.append(conversation)
        with self._mutex:
            self._write_tokens()  # the open transaction's (if this thread has one)
            if self._pending is None:
                self._pending = 1 if self._one("SELECT 1 FROM search_pending LIMIT 1") else 0
            if self._pending:  # pending tokens first: one write, then none until more come
                with self.transaction(sync=False):  # (a lost move leaves them pending)
                    self._merge_tokens()
            rows = self._all(sql, [*params, limit + 16])
        out = []
        for row in rows:
            message = self._message(row)
            if search.matches(message, wanted):  # rules out a token collision
                out.append(message)
                if len(out) >= limit:
                    break
        return out

    def get_message(self, message_id: str) -> StoredMessage | None:
        row = self._one("SELECT * FROM messages WHERE message_id = ?", (message_id,))
        return None if row is None else self._message(row)

    def history(
        self, conversation: str, *, limit: int = 100, before: float | None = None
    ) -> list[StoredMessage]:
        rows = self._all(
            "SELECT * FROM messages WHERE conversation = ? AND sent_at < ?"
            " ORDER BY sent_at DESC, received_at DESC, message_id DESC LIMIT ?",
            (conversation, float("inf") if before is None else before, max(limit, 0)),
        )
        return [self._message(r) for r in reversed(rows)]

    def update_message_state(
        self, message_id: str, state: DeliveryState, *, direction: Direction | None = None
    ) -> bool:
        lower = [s.value for s in DeliveryState if s.rank < state.rank]
        where = "" if direction is None else " AND direction = ?"
        params = [
            state.value,
            message_id,
            *lower,
            *([] if direction is None else [direction.value]),
        ]
        with self.transaction():
            if self._exec(
                "UPDATE messages SET state = ? WHERE message_id = ?"  # noqa: S608
                f" AND state IN ({', '.join('?' * len(lower))}){where}",
                params,
            ).rowcount:
                return True  # the usual case: one statement
            row = self._one("SELECT state FROM messages WHERE message_id = ?", (message_id,))
            if row is None:
                return False
            try:  # not moved forward (or another direction); only a damaged state is an error
                DeliveryState(row[0])
            except ValueError:
                raise StoreCorrupted(f"message {message_id!r} has state {row[0]!r}") from None
            return False

    def update_message_states(
        self,
        message_ids: Iterable[str],
        state: DeliveryState,
        *,
        direction: Direction | None = None,
    ) -> int:
        ids = list(dict.fromkeys(message_ids))
        lower = [s.value for s in DeliveryState if s.rank < state.rank]
        where = "" if direction is None else " AND direction = ?"
        changed = 0
        with self.transaction():
            for start in range(0, len(ids), _IN_CHUNK):  # one statement per receipt, usually
                chunk = ids[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                n = self._exec(
                    f"UPDATE messages SET state = ? WHERE message_id IN ({marks})"  # noqa: S608
                    f" AND state IN ({', '.join('?' * len(lower))}){where}",
                    [
                        state.value,
                        *chunk,
                        *lower,
                        *([] if direction is None else [direction.value]),
                    ],
                ).rowcount
                changed += n
                if n < len(chunk):  # some were not moved: only a damaged state is an error
                    for message_id, value in self._exec(
                        f"SELECT message_id, state FROM messages WHERE message_id IN ({marks})",  # noqa: S608
                        chunk,
                    ).fetchall():
                        try:
                            DeliveryState(value)
                        except ValueError:
                            raise StoreCorrupted(
                                f"message {message_id!r} has state {value!r}"
                            ) from None
        return changed

    def update_attachment(self, message_id: str, attachment: dict[str, object]) -> bool:
        with self.transaction():
            current = self.get_message(message_id)
            if current is None:
                return False
            return self.replace_message(dataclasses.replace(current, attachment=attachment))

    def mark_conversation_read(
        self, conversation: str, *, now: float | None = None
    ) -> list[StoredMessage]:
        with self.transaction():
            rows = self._all(
                "SELECT * FROM messages WHERE conversation = ? AND direction = ?"
                " AND state = ? ORDER BY sent_at, received_at, message_id",
                (conversation, Direction.IN.value, DeliveryState.RECEIVED.value),
            )
            self._exec(
                "UPDATE messages SET state = ? WHERE conversation = ? AND direction = ?"
                " AND state = ?",
                (
                    DeliveryState.READ.value,
                    conversation,
                    Direction.IN.value,
                    DeliveryState.RECEIVED.value,
                ),
            )
            read = [self._replace_state(self._message(r), DeliveryState.READ) for r in rows]
            if now is not None:
                for i, m in enumerate(read):
                    if m.expires_in and m.expire_at is None:
                        read[i] = dataclasses.replace(m, expire_at=now + m.expires_in)
                        self._exec(
                            "UPDATE messages SET expire_at = ? WHERE message_id = ?",
                            (read[i].expire_at, m.message_id),
                        )
        return read

    @staticmethod
    def _replace_state(m: StoredMessage, state: DeliveryState) -> StoredMessage:
        return dataclasses.replace(m, state=state)

    def conversations(self) -> list[ConversationSummary]:
        rows = self._all(
            "SELECT conversation, max(sent_at), sum(direction = ? AND state = ?), count(*)"
            " FROM messages GROUP BY conversation ORDER BY max(sent_at) DESC, conversation",
            (Direction.IN.value, DeliveryState.RECEIVED.value),
        )
        return [ConversationSummary(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    # ------------------------------------------------------------------ outbox

    def outbox_put(self, entry: OutboxEntry) -> None:
        with self.transaction():  # inserted at its commit (_write_outbox), the burst's at once
            mid = entry.message_id
            self._attempts.pop(mid, None)  # replaced: counted from the entry's
            self._removed.discard(mid)
            self._puts[mid] = entry

    def outbox_pending(self, *, conversation: str | None = None) -> list[OutboxEntry]:
        with self._mutex:
            if self._depth:  # the open transaction's attempts and removals first
                self._write_outbox()
            return self._outbox_pending(conversation)

    def _outbox_pending(self, conversation: str | None) -> list[OutboxEntry]:
        rows = (
            self._all("SELECT * FROM outbox ORDER BY created_at, message_id")
            if conversation is None
            else self._all(
                "SELECT * FROM outbox WHERE conversation = ? ORDER BY created_at, message_id",
                (conversation,),
            )
        )
        return [
            OutboxEntry(r[0], r[1], self._open("outbox", _rk(r[0]), r[4]), r[2], r[3]) for r in rows
        ]

    def outbox_attempted(self, message_id: str) -> None:
        with self.transaction():  # counted at its commit (_write_outbox)
            new = self._puts.get(message_id)
            if new is not None:  # inserted by this transaction: inserted counted
                self._puts[message_id] = OutboxEntry(  # (dataclasses.replace costs 2.5x)
                    new.message_id, new.conversation, new.payload, new.created_at, new.attempts + 1
                )
            elif message_id not in self._removed:
                self._attempts[message_id] = self._attempts.get(message_id, 0) + 1

    def outbox_remove(self, message_id: str) -> None:
        with self.transaction():  # removed at its commit (_write_outbox)
            self._puts.pop(message_id, None)
            self._attempts.pop(message_id, None)
            self._removed.add(message_id)

    # ------------------------------------------------------------------ seen ids

    def mark_seen(self, message_id: str, at: float) -> bool:
        return self._write("INSERT OR IGNORE INTO seen VALUES (?, ?)", (message_id, at)) == 1

    def mark_seen_many(self, message_ids: Sequence[str], at: float) -> set[str]:
        with self.transaction():
            rows = self._insert_rows(
                "INSERT OR IGNORE INTO seen VALUES",
                [(mid, at) for mid in message_ids],
                " RETURNING message_id",
            )
        return {row[0] for row in rows}

    def is_seen(self, message_id: str) -> bool:
        return self._one("SELECT 1 FROM seen WHERE message_id = ?", (message_id,)) is not None

    def prune_seen(self, older_than: float, prefix: str = "") -> int:
        return self._write(
            "DELETE FROM seen WHERE at < ? AND substr(message_id, 1, ?) = ?",
            (older_than, len(prefix), prefix),
        )

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        with self._mutex:
            if key in self._settings:
                return self._settings[key]
            row = self._one("SELECT value FROM kv WHERE key = ? AND secret = 0", (key,))
            value = None if row is None else bytes(row[0]).decode()
            self._settings[key] = value
            return value

    def set_setting(self, key: str, value: str | None) -> None:
        with self.transaction():
            self._set_kv(key, None if value is None else value.encode(), secret=False)
            self._settings[key] = value

    def get_secret(self, key: str) -> bytes | None:
        with self._mutex:
            if key in self._secrets:
                return self._secrets[key]
            row = self._one("SELECT value FROM kv WHERE key = ? AND secret = 1", (key,))
            value = None if row is None else self._open("kv", _rk(key), row[0])
            self._secrets[key] = value
            return value

    def set_secret(self, key: str, value: bytes | None) -> None:
        sealed = None if value is None else self._seal("kv", _rk(key), value)
        with self.transaction():
            self._set_kv(key, sealed, secret=True)
            self._secrets[key] = value

    def _set_kv(self, key: str, value: bytes | None, *, secret: bool) -> None:
        if value is None:
            self._write("DELETE FROM kv WHERE key = ? AND secret = ?", (key, int(secret)))
        else:
            self._write("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, int(secret), value))

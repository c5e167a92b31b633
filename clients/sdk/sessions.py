"""Pairwise Double Ratchet sessions with peer devices, kept in the store.

A peer device may have more than one live session (both sides initiated at the same time,
or the peer reinstalled): the store keeps, per device, a small list, newest first::

    u8 version (1) || u8 n (1..=4) || n x bytes32 crypto Session state

Encryption uses the first; decryption tries the one whose PQXDH base key an initial
message names, otherwise each in turn; the one that decrypts moves to the front. Decryption
works on copies and returns a ``commit`` callable, so the caller checks the sender first and
then writes the session, the message and the "seen" mark in one store transaction.

**Decoded-session cache.** Decoding a state (which loads each ratchet key pair) would cost
more than the decryption itself, so :class:`SessionBook` keeps the decoded sessions of each
device beside the exact bytes they were decoded from, and reuses them only while the store
still returns those bytes: a transaction that rolled back (a store failure in the middle of a
burst, a crash) leaves the store's state, which differs, and the next use decodes that. The
cached sessions are never advanced in place: encrypting and decrypting work on copies
(:meth:`Session.copy`), which replace the cached ones only once written to the store — a
message that fails, or is refused after decrypting, leaves the cache as the store has it.

**Replayed initial messages.** An initial message that used no one-time X25519 prekey and the
last-resort ML-KEM prekey consumes nothing, so PQXDH alone would accept it again and again (a
relay replaying it after the session was evicted or dropped would start a second copy of the
session). Every such message we accept leaves its *replay id* — SHA-256 of its PQXDH prefix
(``replay_id``) — in the store's seen set, under ``pqxdh:<signed prekey id>:<hex>``
(:func:`replay_key`); a second initial message with the same id is refused with
:class:`ReplayedInitialMessage` before any key agreement. A replay naming a one-time prekey
already fails, the prekey being gone (``UnknownPrekey``). The guard is needed only while the
signed prekey it names is held: once that key is deleted (its successor is older than the
grace period, :func:`clients.sdk.identity.rotate_signed_prekey`) a replay fails with
``UnknownPrekey`` anyway, and the guards naming it are deleted with it — so the seen set does
not grow forever. (Guards written before the key id was part of the name, ``pqxdh:<hex>``,
are still honoured, and deleted by the rotation once older than every signed prekey held.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from clients.sdk.identity import (
    LAST_RESORT_ID_BASE,
    LocalIdentity,
    consume_prekeys,
    prekey_secrets_for,
)
from clients.store.base import Store
from crypto.encoding import Reader, Writer
from crypto.envelope import KIND_INITIAL, InitialMessage, PqxdhPrefix, decode_message
from crypto.errors import DecryptionError, StateError, VoxError
from crypto.keys import PeerDevice, PrekeyBundle
from crypto.pqxdh import accept_session, initiate_session
from crypto.ratchet.session import Session, initial_digest

__all__ = [
    "MAX_SESSIONS",
    "REPLAY_PREFIX",
    "Decrypted",
    "ReplayedInitialMessage",
    "SessionBook",
    "replay_id",
    "replay_key",
]

MAX_SESSIONS: Final = 4
#: Seen-set names of replay guards: ``pqxdh:<signed prekey id>:<replay id hex>``.
REPLAY_PREFIX: Final = "pqxdh:"
_VERSION: Final = 1
_INITIAL_KIND: Final = bytes((KIND_INITIAL,))
#: Devices whose decoded sessions :class:`SessionBook` keeps at most (then it starts over).
CACHED_DEVICES: Final = 4096


def _encode(sessions: list[Session]) -> bytes:
    w = Writer().u8(_VERSION).u8(len(sessions))
    for session in sessions:
        w.bytes32(session.to_bytes())
    return w.finish()


def _decode(data: bytes) -> list[Session]:
    r = Reader(data)
    r.version(_VERSION)
    n = r.u8()
    out = [Session.from_bytes(r.bytes32("session")) for _ in range(n)]
    r.end()
    return out


class ReplayedInitialMessage(DecryptionError):
    """A PQXDH initial message (no one-time prekey) that was already accepted once."""

    def __init__(self, replay: bytes) -> None:
        super().__init__("a replayed PQXDH initial message")
        self.replay_id = replay


def replay_id(prefix: PqxdhPrefix) -> bytes | None:
    """SHA-256 of the PQXDH prefix when the message can be replayed (it used no one-time
    X25519 prekey and the last-resort ML-KEM prekey), else None."""
    if prefix.one_time_prekey_id is not None or prefix.kem_prekey_id < LAST_RESORT_ID_BASE:
        return None
    return initial_digest(prefix)


def replay_key(prefix: PqxdhPrefix) -> str | None:
    """The seen-set name of the message's replay guard (None if it cannot be replayed)."""
    replay = replay_id(prefix)
    if replay is None:
        return None
    return f"{REPLAY_PREFIX}{prefix.signed_prekey_id}:{replay.hex()}"


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A decrypted pairwise message: the body, the peer as the session knows it, and
    ``commit()`` which stores the advanced session state."""

    body: bytes
    peer: PeerDevice
    new_session: bool
    commit: Callable[[], None]


class SessionBook:
    """Sessions of this device, backed by ``store`` (no I/O besides the store)."""

    def __init__(self, store: Store, identity: LocalIdentity) -> None:
        self._store = store
        self._identity = identity
        #: (username, device) -> (the stored bytes, the sessions decoded from them).
        self._decoded: dict[tuple[str, int], tuple[bytes, list[Session]]] = {}
        #: Inside :meth:`deferred`: sessions saved but not yet encoded and written.
        self._unwritten: dict[tuple[str, int], list[Session]] = {}
        self._deferring = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside a store transaction: the sessions saved in this block are encoded and
        written to the store once, at its end (a burst advances one session many times; only
        its last state is written). If the block raises, they are dropped (the transaction
        rolls back: the store and the book keep the states from before the block)."""
        if self._deferring:
            yield
            return
        self._deferring = True
        try:
            yield
        except BaseException:
            self._unwritten.clear()
            raise
        finally:
            self._deferring = False
        unwritten, self._unwritten = self._unwritten, {}
        for (username, device_id), sessions in unwritten.items():
            self._write(username, device_id, sessions)

    def _load(self, username: str, device_id: int) -> list[Session]:
        """The device's sessions as the store has them now (or as saved in
        :meth:`deferred`). Shared with the cache: never advance them in place (work on
        :meth:`Session.copy`, then :meth:`_save`)."""
        key = (username, device_id)
        if self._unwritten:
            unwritten = self._unwritten.get(key)
            if unwritten is not None:
                return unwritten
        data = self._store.load_session(username, device_id)
        if data is None:
            return []
        cached = self._decoded.get(key)
        if cached is not None and (cached[0] is data or cached[0] == data):
            return cached[1]
        sessions = _decode(data)
        self._remember(key, data, sessions)
        return sessions

    def _save(self, username: str, device_id: int, sessions: list[Session]) -> None:
        """Write ``sessions`` (the caller hands them over: no more changes to them); in
        :meth:`deferred`, at its end."""
        if self._deferring:
            self._unwritten[(username, device_id)] = sessions
            return
        self._write(username, device_id, sessions)

    def _write(self, username: str, device_id: int, sessions: list[Session]) -> None:
        key = (username, device_id)
        self._decoded.pop(key, None)  # if the write fails, the next use decodes the store's
        data = _encode(sessions)
        self._store.store_session(username, device_id, data)
        self._remember(key, data, sessions)

    def _remember(self, key: tuple[str, int], data: bytes, sessions: list[Session]) -> None:
        if len(self._decoded) >= CACHED_DEVICES:
            self._decoded.clear()
        self._decoded[key] = (data, sessions)

    def has_session(self, username: str, device_id: int) -> bool:
        """Whether we can encrypt to this device without a bundle."""
        if (username, device_id) in self._unwritten:
            return True
        return self._store.load_session(username, device_id) is not None

    def peer(self, username: str, device_id: int) -> PeerDevice | None:
        """The peer identity of our current session with the device."""
        sessions = self._load(username, device_id)
        return sessions[0].peer if sessions else None

    def drop(self, username: str, device_id: int) -> None:
        """Forget every session with a device (it left the list or re-keyed)."""
        self._decoded.pop((username, device_id), None)
        self._unwritten.pop((username, device_id), None)
        self._store.delete_session(username, device_id)

    def start(self, bundle: PrekeyBundle) -> None:
        """Initiate a session from a verified bundle (signatures are checked here too)."""
        session = initiate_session(self._identity.local, bundle)
        address = bundle.address
        existing = self._load(address.username, address.device_id)
        self._save(address.username, address.device_id, [session, *existing][:MAX_SESSIONS])

    def encrypt(self, username: str, device_id: int, body: bytes) -> bytes:
        """Encrypt ``body`` with the device's current session and store the advanced state."""
        sessions = self._load(username, device_id)
        if not sessions:
            raise StateError(f"no session with {username}:{device_id}")
        current = sessions[0].copy()
        ciphertext = current.encrypt(body)
        self._save(username, device_id, [current, *sessions[1:]])
        return ciphertext

    def decrypt(
        self, username: str, device_id: int, data: bytes, *, now: float | None = None
    ) -> Decrypted:
        """Decrypt a pairwise envelope from the device ``username:device_id``.

        Nothing is written: the result's :meth:`Decrypted.commit` stores the advanced session
        (and deletes consumed one-time prekeys), so the caller can check the sender first and
        commit everything in one store transaction. Raises crypto's ``VoxError`` subclasses.
        """
        sessions = self._load(username, device_id)
        # A ratchet message (most of them) is parsed by the session itself, so it is decoded
        # here only when it may be an initial message or there is no session to try.
        maybe_initial = data[1:2] == _INITIAL_KIND
        message = decode_message(data) if maybe_initial or not sessions else None
        if isinstance(message, InitialMessage):
            for i, session in enumerate(sessions):
                if session.base_key == message.prefix.base_key:
                    trial = session.copy()
                    body = trial.decrypt(data, now=now)
                    return Decrypted(
                        body,
                        trial.peer,
                        False,
                        self._front(username, device_id, sessions, i, trial),
                    )
            prefix = message.prefix
            if (prefix.sender.username, prefix.sender.device_id) != (username, device_id):
                raise StateError("initial message names another sender device")
            replay = replay_id(prefix)
            seen_key = replay_key(prefix)
            if replay is not None and (
                self._store.is_seen(seen_key or "")
                or self._store.is_seen(REPLAY_PREFIX + replay.hex())  # written before the id
            ):
                raise ReplayedInitialMessage(replay)
            accepted = accept_session(
                self._identity.local, prekey_secrets_for(self._store, prefix), message, now=now
            )
            new = [accepted.session, *sessions][:MAX_SESSIONS]

            def commit() -> None:
                consume_prekeys(self._store, accepted.consumed)
                self._save(username, device_id, new)
                if seen_key is not None:
                    self._store.mark_seen(seen_key, time.time() if now is None else now)

            return Decrypted(accepted.body, accepted.session.peer, True, commit)
        last_error: VoxError = DecryptionError("no session with the sender device")
        for i, session in enumerate(sessions):
            trial = session.copy()
            try:
                body = trial.decrypt(data, now=now)
            except DecryptionError as exc:
                last_error = exc
                continue
            return Decrypted(
                body, trial.peer, False, self._front(username, device_id, sessions, i, trial)
            )
        raise last_error

    def _front(
        self, username: str, device_id: int, sessions: list[Session], i: int, advanced: Session
    ) -> Callable[[], None]:
        """Commit: ``advanced`` (session ``i`` after decrypting) first, the others after it."""
        ordered = [advanced, *sessions[:i], *sessions[i + 1 :]]
        return lambda: self._save(username, device_id, ordered)

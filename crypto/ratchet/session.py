"""One pairwise Double Ratchet session between this device and one peer device.

The session is a mutable state machine driven by the caller: :meth:`Session.encrypt`
returns envelope bytes to send, :meth:`Session.decrypt` takes envelope bytes and returns
the body. Decryption is **commit-on-success**: every new value is computed into locals,
and the session is only changed after the AEAD tag verified and the payload's sender
matched, so a failed decrypt leaves :meth:`Session.to_bytes` byte-identical.

The sending side of a DH ratchet step is lazy (as in vodozemac): receiving a new ratchet
key derives the receiving chain; the next :meth:`Session.encrypt` draws a new ratchet key
pair from its ``rng`` and derives the sending chain. Decryption needs no randomness.

Sessions are created by :mod:`crypto.pqxdh` (``initiate_session`` / ``accept_session``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from crypto import primitives as p
from crypto.encoding import Reader, Writer
from crypto.envelope import (
    ENVELOPE_VERSION,
    KIND_INITIAL,
    KIND_RATCHET,
    MAX_BODY,
    PAYLOAD_VERSION,
    InitialMessage,
    Payload,
    PqxdhPrefix,
    RatchetMessage,
    decode_message,
    message_associated_data,
)
from crypto.errors import (
    DuplicateMessage,
    InvalidValue,
    SenderMismatch,
    StateError,
    TooManySkipped,
    UnsupportedVersion,
)
from crypto.keys import DeviceAddress, PeerDevice, X25519PublicKey
from crypto.ratchet.chain_key import CHAIN_KEY_CONSTANT, MESSAGE_KEY_CONSTANT, ChainKey
from crypto.ratchet.header import HEADER_LEN
from crypto.ratchet.message_keys import MessageKey, aead_key
from crypto.ratchet.root_chain import RootKey
from crypto.ratchet.skipped_keys import SkippedKeys

__all__ = ["MAX_SKIPPED_AGE", "SESSION_VERSION", "RatchetConfig", "Session", "initial_digest"]

SESSION_VERSION: Final = 2
#: The first state version (no skipped-key ages): still read, never written.
SESSION_VERSION_V1: Final = 1
#: Default age limit of a skipped message key: the relay's default envelope TTL.
MAX_SKIPPED_AGE: Final = 30 * 24 * 3600
#: How many previous receiving ratchet keys are remembered to classify replays.
PREVIOUS_KEYS: Final = 5
_MAX_AD: Final = 1024


def initial_digest(prefix: PqxdhPrefix) -> bytes:
    """SHA-256 of the encoded PQXDH prefix: identifies the session both sides share."""
    return p.sha256(prefix.write(Writer()).finish())


@dataclass(frozen=True, slots=True)
class RatchetConfig:
    """Limits of one session (all stored in the session state).

    * ``max_skip``: message keys one message may make the receiver skip, **in total** over
      the old and the new chain of a DH step. It also bounds the work a forged message costs
      before its tag is checked: at most ``max_skip`` HMACs (chain steps), one X25519 and one
      HKDF.
    * ``max_stored``: skipped keys kept in total (oldest evicted).
    * ``max_skipped_age``: seconds after which a skipped key expires (``0`` = no limit);
      measured on the ``now`` the caller passes to :meth:`Session.decrypt`.
    """

    max_skip: int = 1000
    max_stored: int = 2000
    max_skipped_age: int = MAX_SKIPPED_AGE

    def __post_init__(self) -> None:
        if not 0 <= self.max_skip <= 0xFFFF or not 0 <= self.max_stored <= 0xFFFF:
            raise InvalidValue("ratchet config", "limits must be in 0..65535")
        if not 0 <= self.max_skipped_age <= 0xFFFFFFFF:
            raise InvalidValue("ratchet config", "max_skipped_age must be a u32")


_U32: Final = struct.Struct(">I")
_U32X2: Final = struct.Struct(">II")
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")
#: A present-flag followed by an X25519 public key's type prefix (``0x01 || 0x01``).
_FLAG_X25519: Final = b"\x01" + bytes((X25519PublicKey.PREFIX,))
_COUNT8: Final = tuple(bytes((n,)) for n in range(PREVIOUS_KEYS + 1))
#: The smallest version-2 ratchet message: version, kind, header, nonce, length, tag.
_MIN_RATCHET_V2: Final = 2 + HEADER_LEN + p.AES_NONCE_LEN + 4 + p.AES_TAG_LEN
_MAX_CIPHERTEXT: Final = MAX_BODY + 64 + p.AES_TAG_LEN


def _split_ratchet_message(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(header, nonce, ciphertext)`` of a well-formed version-2 kind-0x01 envelope, or
    ``None`` for anything else (which :func:`decode_message` then decodes or refuses with the
    precise error). Accepts exactly what the general decoder accepts for this kind."""
    if len(data) < _MIN_RATCHET_V2 or data[0] != ENVELOPE_VERSION or data[1] != KIND_RATCHET:
        return None
    if data[2] != X25519PublicKey.PREFIX:
        return None
    (length,) = _U32.unpack_from(data, 55)
    if length + 59 != len(data) or length > _MAX_CIPHERTEXT:
        return None
    if type(data) is not bytes:
        data = bytes(data)
    return data[2:43], data[43:55], data[59:]


def _payload_prefix(address: DeviceAddress) -> bytes:
    return address.write(Writer().u8(PAYLOAD_VERSION)).finish()


def _walk(chain: ChainKey, index: int) -> tuple[list[bytes], ChainKey]:
    """Step ``chain`` up to ``index``: the raw chain keys passed (one HMAC each), and the chain
    at ``index``. Message keys are derived from the passed keys only after a tag verified."""
    passed: list[bytes] = []
    while chain.index < index:
        passed.append(chain.key)
        chain = chain.next()
    return passed, chain


def _message_keys(chain_keys: list[bytes], first_index: int) -> list[MessageKey]:
    return [ChainKey(ck, first_index + i).message_key() for i, ck in enumerate(chain_keys)]


def _write_chain(w: Writer, chain: ChainKey | None) -> None:
    w.u8(int(chain is not None))
    if chain is not None:
        w.raw(chain.key).u32(chain.index)


def _read_chain(r: Reader, field: str) -> ChainKey | None:
    return ChainKey(r.raw(32), r.u32()) if r.flag(field) else None


class Session:
    """A Double Ratchet session (see the module docstring)."""

    __slots__ = (
        "_ad",
        "_base_key",
        "_clock",
        "_config",
        "_head",
        "_initial_digest",
        "_own_prefix",
        "_peer_prefix",
        "_pending",
        "_pending_encoded",
        "_previous_counter",
        "_previous_remote",
        "_receiving",
        "_remote",
        "_root",
        "_self_key",
        "_self_public",
        "_sending",
        "_skipped",
        "local",
        "peer",
    )

    def __init__(
        self,
        *,
        local: DeviceAddress,
        peer: PeerDevice,
        associated_data: bytes,
        root_key: RootKey,
        self_key: p.X25519KeyPair,
        remote_key: X25519PublicKey | None,
        sending: ChainKey | None,
        base_key: X25519PublicKey,
        initial_digest: bytes,
        pending: PqxdhPrefix | None,
        config: RatchetConfig,
    ) -> None:
        """Low-level constructor; use ``crypto.pqxdh`` or :meth:`from_bytes` instead."""
        self.local = local
        self.peer = peer
        self._ad = associated_data
        self._root = root_key
        self._self_key = self_key
        self._self_public = X25519PublicKey(self._self_key.public)
        self._remote = remote_key
        self._sending = sending
        self._receiving: ChainKey | None = None
        self._previous_counter = 0
        # The last PREVIOUS_KEYS receiving ratchet keys, oldest first (a tuple: copies share it).
        self._previous_remote: tuple[bytes, ...] = ()
        self._skipped = SkippedKeys(config.max_stored)
        self._base_key = base_key
        self._initial_digest = initial_digest
        self._pending = pending
        self._config = config
        self._clock = 0
        self._own_prefix: bytes | None = None
        self._peer_prefix: bytes | None = None
        self._pending_encoded: bytes | None = None
        self._head: bytes | None = None  # the state's encoding up to the clock (never changes)

    # --- properties -------------------------------------------------------------------

    @property
    def associated_data(self) -> bytes:
        """The session associated data (PQXDH ``AD``) prefixed to every header."""
        return self._ad

    @property
    def base_key(self) -> X25519PublicKey:
        """The initiator's PQXDH ephemeral key: identifies the session on both sides."""
        return self._base_key

    @property
    def awaiting_reply(self) -> bool:
        """True while this (initiating) side still prefixes messages with PQXDH fields."""
        return self._pending is not None

    @property
    def initial_digest(self) -> bytes:
        """SHA-256 of the session's PQXDH prefix (:func:`initial_digest`); an initial message
        that used no one-time prekeys can be replayed, and this is the id to remember."""
        return self._initial_digest

    @property
    def skipped_count(self) -> int:
        """Number of stored skipped message keys."""
        return len(self._skipped)

    def __repr__(self) -> str:
        peer, skipped = self.peer.address, len(self._skipped)
        return f"Session(local={self.local}, peer={peer}, skipped={skipped})"

    # --- encrypt ----------------------------------------------------------------------

    def encrypt(self, body: bytes, rng: p.Rng = p.random_bytes) -> bytes:
        """Encrypt ``body`` for the peer; return envelope bytes (initial or ratchet message).

        Version-2 envelope: ``rng`` gives a new ratchet key (32 bytes) when a new sending
        chain starts, then the message's 12-byte nonce.
        """
        return self._seal(body, rng, ENVELOPE_VERSION)

    def _seal(self, body: bytes, rng: p.Rng, version: int) -> bytes:
        # ``version`` 1 exists only so the vector generator can reproduce the pinned v1
        # vectors; applications always get version 2 through :meth:`encrypt`. The envelope is
        # assembled from bytes directly (the layouts of crypto.envelope, which decodes it).
        if self._remote is None:
            raise StateError("no ratchet key from the peer yet; this session cannot send")
        if len(body) > MAX_BODY:
            raise InvalidValue("body", f"longer than {MAX_BODY} bytes")
        root, sending = self._root, self._sending
        pair, public = self._self_key, self._self_public
        if sending is None:
            pair = p.X25519KeyPair.generate(rng)
            public = X25519PublicKey(pair.public)
            root, sending = root.advance(pair.exchange(self._remote.raw))
        header = b"\x01" + public.raw + _U32X2.pack(self._previous_counter, sending.index)
        kind = KIND_RATCHET if self._pending is None else KIND_INITIAL
        lead = bytes((version, kind))
        plaintext = self._payload_prefix() + _U32.pack(len(body)) + body
        mk, next_key = p.hmac_sha256_pair(sending.key, MESSAGE_KEY_CONSTANT, CHAIN_KEY_CONSTANT)
        if version == ENVELOPE_VERSION:
            nonce = p.random_nonce(rng)
            ciphertext = p.aes256gcm_encrypt(
                aead_key(mk), nonce, plaintext, self._ad + lead + header
            )
        else:
            nonce = b""
            ciphertext = MessageKey(mk, sending.index).encrypt_v1(plaintext, self._ad + header)
        following = ChainKey(next_key, sending.index + 1)
        self._root, self._sending = root, following
        self._self_key, self._self_public = pair, public
        prefix = b"" if self._pending is None else self._pending_bytes()
        return b"".join((lead, prefix, header, nonce, _U32.pack(len(ciphertext)), ciphertext))

    def _payload_prefix(self) -> bytes:
        """``Payload`` up to the body length: version, our username and device id."""
        cached = self._own_prefix
        if cached is None:
            cached = self._own_prefix = _payload_prefix(self.local)
        return cached

    def _pending_bytes(self) -> bytes:
        cached = self._pending_encoded
        if cached is None:
            assert self._pending is not None
            cached = self._pending_encoded = self._pending.write(Writer()).finish()
        return cached

    # --- decrypt ----------------------------------------------------------------------

    def decrypt(self, data: bytes, *, now: float | None = None) -> bytes:
        """Decrypt envelope bytes from the peer and return the body.

        ``now`` (seconds since the epoch) is the caller's clock: skipped message keys older
        than ``config.max_skipped_age`` no longer open their message and are deleted at this
        commit. Without ``now`` the session's last known time is used (nothing new expires).

        Raises ``DecodeError`` (malformed), ``AuthenticationFailed`` (tampered or not for
        this session), ``DuplicateMessage`` (replay), ``TooManySkipped`` (gap over the
        bound), ``InvalidPublicKey`` (bad ratchet key), ``SenderMismatch`` (the payload
        names another sender) or ``StateError`` (an initial message of another session).
        The session is unchanged whenever anything is raised.
        """
        fast = _split_ratchet_message(data)
        if fast is not None:  # the common case: a well-formed version-2 ratchet message
            header, nonce, ciphertext = fast
            return self._decrypt(ENVELOPE_VERSION, KIND_RATCHET, header, nonce, ciphertext, now)
        message = decode_message(data)
        if (
            isinstance(message, InitialMessage)
            and initial_digest(message.prefix) != self._initial_digest
        ):
            raise StateError("initial message of another session (different PQXDH prefix)")
        return self.decrypt_message(message, now=now)

    def expire_skipped(self, now: float) -> int:
        """Delete the skipped message keys older than ``config.max_skipped_age`` at ``now``.

        For sessions that receive nothing for a long time (a decrypt does this too). Returns
        how many keys were deleted; the caller stores the session afterwards.
        """
        self._clock = max(self._clock, int(now))
        return self._skipped.expire(self._clock, self._config.max_skipped_age)

    def decrypt_message(
        self, envelope: RatchetMessage | InitialMessage, *, now: float | None = None
    ) -> bytes:
        """Decrypt an already decoded message (see :meth:`decrypt`).

        The caller has checked an initial message's prefix (this method does not).
        """
        if isinstance(envelope, InitialMessage):
            message, kind = envelope.message, KIND_INITIAL
        else:
            message, kind = envelope, KIND_RATCHET
        header = message.header.to_bytes()
        return self._decrypt(message.version, kind, header, message.nonce, message.ciphertext, now)

    def _decrypt(
        self,
        version: int,
        kind: int,
        header: bytes,
        nonce: bytes,
        ciphertext: bytes,
        now: float | None,
    ) -> bytes:
        """The ratchet proper, on a header known to be 41 well-formed bytes (its ratchet key
        is checked for canonical form before it is used as a new key)."""
        ratchet_key = header[1:33]
        previous_chain_length, index = _U32X2.unpack_from(header, 33)
        ad = message_associated_data(self._ad, version, kind, header)
        clock = self._clock if now is None else max(self._clock, int(now))
        max_age, max_skip = self._config.max_skipped_age, self._config.max_skip

        receiving = self._receiving
        remote = self._remote
        if len(self._skipped):
            stored = self._skipped.get(ratchet_key, index, clock, max_age)
            if stored is not None:
                body = self._open(stored.key, version, nonce, ciphertext, ad)
                self._skipped.remove(ratchet_key, index)
                return self._commit(body, clock)

        if remote is not None and receiving is not None and ratchet_key == remote.raw:
            if index < receiving.index:
                raise DuplicateMessage(ratchet_key, index)
            gap = index - receiving.index
            if gap > max_skip:
                raise TooManySkipped(gap, max_skip)
            passed, chain = _walk(receiving, index) if gap else ([], receiving)
            mk, next_key = p.hmac_sha256_pair(chain.key, MESSAGE_KEY_CONSTANT, CHAIN_KEY_CONSTANT)
            body = self._open(mk, version, nonce, ciphertext, ad)
            self._receiving = ChainKey(next_key, index + 1)
            if passed:
                self._skipped.add(ratchet_key, _message_keys(passed, receiving.index), clock)
            return self._commit(body, clock)

        if ratchet_key in self._previous_remote:
            raise DuplicateMessage(ratchet_key, index)

        # A new ratchet key from the peer: a DH ratchet step. Everything that costs work in
        # proportion to attacker-chosen numbers is bounded first, and the old chain's keys
        # are only derived once the new message's tag verified (a forged message costs at
        # most max_skip chain steps, one X25519 and one HKDF).
        new_remote = X25519PublicKey(ratchet_key)  # refuses a non-canonical key
        old_gap = 0
        if receiving is not None and remote is not None:
            old_gap = max(0, previous_chain_length - receiving.index)
        if old_gap + index > max_skip:
            raise TooManySkipped(old_gap + index, max_skip)
        root, new_chain = self._root.advance(self._self_key.exchange(ratchet_key))
        passed, chain = _walk(new_chain, index)
        mk, next_key = p.hmac_sha256_pair(chain.key, MESSAGE_KEY_CONSTANT, CHAIN_KEY_CONSTANT)
        body = self._open(mk, version, nonce, ciphertext, ad)

        if remote is not None:
            if receiving is not None and old_gap:
                old_passed, _ = _walk(receiving, previous_chain_length)
                old_keys = _message_keys(old_passed, receiving.index)
                self._skipped.add(remote.raw, old_keys, clock)
            self._previous_remote = (*self._previous_remote, remote.raw)[-PREVIOUS_KEYS:]
        self._skipped.add(ratchet_key, _message_keys(passed, 0), clock)
        self._root, self._remote = root, new_remote
        self._receiving = ChainKey(next_key, index + 1)
        if self._sending is not None:
            self._previous_counter = self._sending.index
        self._sending = None
        return self._commit(body, clock)

    def _commit(self, body: bytes, clock: int) -> bytes:
        """The common end of every successful decrypt."""
        self._pending = None
        self._pending_encoded = None
        if clock != self._clock:
            self._clock = clock
            self._skipped.expire(clock, self._config.max_skipped_age)
        return body

    def _open(self, mk: bytes, version: int, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
        if version == ENVELOPE_VERSION:
            plaintext = p.aes256gcm_decrypt(aead_key(mk), nonce, ciphertext, ad)
        else:
            plaintext = MessageKey(mk, 0).decrypt_v1(ciphertext, ad)
        expected = self._peer_prefix
        if expected is None:
            expected = self._peer_prefix = _payload_prefix(self.peer.address)
        n = len(expected)
        if (
            plaintext[:n] == expected
            and len(plaintext) >= n + 4
            and _U32.unpack_from(plaintext, n)[0] == len(plaintext) - n - 4 <= MAX_BODY
        ):
            return plaintext[n + 4 :]
        payload = Payload.from_bytes(plaintext)  # raises the precise DecodeError
        if payload.sender != self.peer.address:
            raise SenderMismatch(str(self.peer.address), str(payload.sender))
        return payload.body  # pragma: no cover (an equal sender has the expected prefix)

    def copy(self) -> Session:
        """An independent copy: encrypting or decrypting with it leaves this one unchanged
        (much cheaper than :meth:`to_bytes` + :meth:`from_bytes`, which load the ratchet key
        pair again; every other part of the state is immutable and shared)."""
        other = Session.__new__(Session)
        other.local, other.peer, other._ad = self.local, self.peer, self._ad
        other._root, other._self_key, other._self_public = (
            self._root,
            self._self_key,
            self._self_public,
        )
        other._remote, other._sending, other._receiving = (
            self._remote,
            self._sending,
            self._receiving,
        )
        other._previous_counter = self._previous_counter
        other._previous_remote = self._previous_remote
        other._skipped = self._skipped.copy()
        other._base_key, other._initial_digest = self._base_key, self._initial_digest
        other._pending, other._config, other._clock = self._pending, self._config, self._clock
        other._own_prefix, other._peer_prefix = self._own_prefix, self._peer_prefix
        other._pending_encoded, other._head = self._pending_encoded, self._head
        return other

    # --- serialization ----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize the whole state (contains secrets: store it encrypted).

        ``u8 version || local || peer || bytes16 AD || u16 max_skip || u16 max_stored ||
        u32 max_age || u64 clock || root key || ratchet private key || flag, remote key ||
        flag, sending chain (key, u32 index) || flag, receiving chain || u32 previous counter
        || base key || initial digest || flag, PQXDH prefix || u8 n, previous ratchet keys ||
        u16 n, skipped (ratchet key, u32 index, key, u64 stored_at)`` — assembled from bytes
        (the part up to the clock is encoded once per session object)."""
        head = self._head
        if head is None:
            w = Writer().u8(SESSION_VERSION)
            self.local.write(w)
            self.peer.write(w)
            config = self._config
            w.bytes16(self._ad).u16(config.max_skip).u16(config.max_stored)
            head = self._head = w.u32(config.max_skipped_age).finish()
        parts = [head, _U64.pack(self._clock), self._root.key, self._self_key.private]
        remote = self._remote
        if remote is None:
            parts.append(b"\x00")
        else:  # the flag, then the typed key (X25519PublicKey.to_bytes)
            parts += (_FLAG_X25519, remote.raw)
        for chain in (self._sending, self._receiving):
            if chain is None:
                parts.append(b"\x00")
            else:
                parts += (b"\x01", chain.key, _U32.pack(chain.index))
        parts.append(_U32.pack(self._previous_counter))
        parts.append(self._base_key.to_bytes() + self._initial_digest)
        if self._pending is None:
            parts.append(b"\x00")
        else:
            parts += (b"\x01", self._pending_bytes())
        previous = self._previous_remote
        parts.append(_COUNT8[len(previous)])
        parts += previous
        skipped = self._skipped
        parts.append(_U16.pack(len(skipped)))
        if len(skipped):
            for ratchet_key, mk, stored_at in skipped:
                parts += (ratchet_key, _U32.pack(mk.index), mk.key, _U64.pack(stored_at))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """Inverse of :meth:`to_bytes`; raises only ``DecodeError``.

        Also reads state version 1 (written before skipped keys had ages): its keys get an
        unknown age (they start aging at the next clock reading) and the default age limit.
        """
        r = Reader(data)
        version = r.u8()
        if version not in (SESSION_VERSION_V1, SESSION_VERSION):
            raise UnsupportedVersion(SESSION_VERSION, version)
        local = DeviceAddress.read(r)
        peer = PeerDevice.read(r)
        ad = r.bytes16("associated_data", _MAX_AD)
        max_skip, max_stored = r.u16(), r.u16()
        max_age, clock = (r.u32(), r.u64()) if version == SESSION_VERSION else (MAX_SKIPPED_AGE, 0)
        config = RatchetConfig(max_skip, max_stored, max_age)
        root = RootKey(r.raw(32))
        self_key = p.X25519KeyPair(r.raw(32))
        remote = X25519PublicKey.read(r) if r.flag("has_remote") else None
        sending = _read_chain(r, "has_sending")
        receiving = _read_chain(r, "has_receiving")
        previous_counter = r.u32()
        base_key = X25519PublicKey.read(r)
        digest = r.raw(32)
        pending = PqxdhPrefix.read(r) if r.flag("has_pending") else None
        n_previous = r.u8()
        if n_previous > PREVIOUS_KEYS:
            raise InvalidValue("previous ratchet keys", f"more than {PREVIOUS_KEYS}")
        previous = [r.raw(32) for _ in range(n_previous)]
        n_skipped = r.count("skipped keys", config.max_stored)
        skipped: list[tuple[bytes, MessageKey, int]] = []
        for _ in range(n_skipped):
            ratchet_key, index, key = r.raw(32), r.u32(), r.raw(32)
            stored_at = r.u64() if version == SESSION_VERSION else 0
            if stored_at > clock:
                raise InvalidValue("skipped keys", "stored after the session's clock")
            skipped.append((ratchet_key, MessageKey(key, index), stored_at))
        r.end()
        session = cls(
            local=local,
            peer=peer,
            associated_data=ad,
            root_key=root,
            self_key=self_key,
            remote_key=remote,
            sending=sending,
            base_key=base_key,
            initial_digest=digest,
            pending=pending,
            config=config,
        )
        session._receiving = receiving
        session._previous_counter = previous_counter
        session._previous_remote = tuple(previous)
        session._clock = clock
        for ratchet_key, mk, stored_at in skipped:
            session._skipped.add(ratchet_key, (mk,), stored_at)
        if len(session._skipped) != n_skipped:
            raise InvalidValue("skipped keys", "a (ratchet key, index) pair is repeated")
        return session

"""Sender keys for groups (Signal's ``SenderKey`` construction, AES-256-GCM, Vox encodings).

Each member device keeps one *sending* :class:`SenderKeyState` per group and one *receiving*
state per (group, other member device). A state is a symmetric chain plus an Ed25519 signing
key (private in our own sending state, public in receiving states)::

    message_key_seed_i = HMAC-SHA256(chain_key_i, 0x01)
    chain_key_{i+1}    = HMAC-SHA256(chain_key_i, 0x02)
    v2: aes_key        = HKDF-Expand-SHA256(message_key_seed_i,
                                            "VoxSenderKey-v2 message key", 32)
        nonce          = 12 random bytes drawn per message (carried in the message)
    v1: aes_key || nonce = HKDF-SHA256(ikm=message_key_seed_i, salt=32 zero bytes,
                                       info="VoxSenderKey-v1 message keys", L=44)  (decrypt only)

A message is encrypted once, signed by the sender's signing key, and fanned out to every
member. The sender hands its current chain (:class:`SenderKeyDistribution`) to each member over
the pairwise (Double Ratchet) sessions, which authenticate it.

Receiving states accept out-of-order messages: up to :data:`MAX_SKIP` message keys may be
skipped by one message, and at most :data:`MAX_SKIP` skipped keys are stored (oldest evicted).
A message whose key was already used (or evicted) raises
:class:`~crypto.errors.DuplicateMessage`. :meth:`SenderKeyState.decrypt` commits only on
success: a failed decrypt leaves :meth:`~SenderKeyState.to_bytes` byte-identical.

Rotation: when a member leaves, every remaining member calls :meth:`SenderKeyState.rotate`
(a new random chain, a new signing key and a new ``key_id``) and distributes the new key to the
remaining members only. Receivers keep a :class:`SenderKeyRecord` per (group, sender device):
up to :data:`MAX_STATES_PER_SENDER` receiving states, newest first, so a late message under an
older ``key_id`` still decrypts; a message naming a key id the record does not hold raises
:class:`~crypto.errors.UnknownSenderKey`. See
``docs/protocol-crypto-devices-groups-attachments.md`` §2.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from crypto import primitives
from crypto.encoding import Reader, Writer
from crypto.errors import (
    AuthenticationFailed,
    BadSignature,
    DuplicateMessage,
    FieldTooLarge,
    InvalidValue,
    SenderMismatch,
    StateError,
    TooManySkipped,
    UnknownSenderKey,
    UnsupportedVersion,
)
from crypto.keys import DeviceAddress, Ed25519PublicKey
from crypto.primitives import Rng

__all__ = [
    "MAX_SKIP",
    "MAX_SKIPPED_AGE",
    "MAX_STATES_PER_SENDER",
    "MESSAGE_VERSION",
    "MESSAGE_VERSION_V1",
    "SenderKeyDistribution",
    "SenderKeyMessage",
    "SenderKeyRecord",
    "SenderKeyState",
]

STATE_VERSION: Final = 2
#: The first state version (no skipped-key ages): still read, never written.
STATE_VERSION_V1: Final = 1
#: A skipped message key expires after this many seconds of the caller's clock (30 days, the
#: relay's default envelope TTL); the same rule as the pairwise ratchet's.
MAX_SKIPPED_AGE: Final = 30 * 24 * 3600
DISTRIBUTION_VERSION: Final = 1
#: The group-message version Vox sends: random nonce, version and kind in the AD and signature.
MESSAGE_VERSION: Final = 2
#: The first group-message version (nonce derived from the key): decrypted, never sent.
MESSAGE_VERSION_V1: Final = 1
#: The kind byte of a version-2 group message (pairwise envelopes use 0x01 and 0x02).
KIND_SENDER_KEY: Final = 0x03
MAX_SKIP: Final = 1000
MAX_STATES_PER_SENDER: Final = 5
RECORD_VERSION: Final = 1
MAX_GROUP_ID: Final = 64
MAX_ITERATION: Final = 0xFFFFFFFF
SIGNATURE_LABEL: Final = b"VoxSenderKeyMessage-v2"
SIGNATURE_LABEL_V1: Final = b"VoxSenderKeyMessage-v1"
HKDF_INFO: Final = b"VoxSenderKey-v2 message key"
HKDF_INFO_V1: Final = b"VoxSenderKey-v1 message keys"
_EXPAND: Final = HKDF_INFO + b"\x01"
_U32: Final = struct.Struct(">I")
_U32X2: Final = struct.Struct(">II")
_MESSAGE_KEY_SEED: Final = b"\x01"
_CHAIN_KEY_SEED: Final = b"\x02"


def _read_group_id(r: Reader) -> bytes:
    group_id = r.bytes16("group_id", MAX_GROUP_ID)
    if not group_id:
        raise InvalidValue("group_id", "must not be empty")
    return group_id


def _check_group_id(group_id: bytes) -> None:
    if not 1 <= len(group_id) <= MAX_GROUP_ID:
        raise ValueError(f"group id must be 1..{MAX_GROUP_ID} bytes")


def _message_key(seed: bytes) -> bytes:
    """The version-2 AES key (HKDF-Expand with one block: one HMAC)."""
    return primitives.hmac_sha256(seed, _EXPAND)


def _message_key_v1(seed: bytes) -> tuple[bytes, bytes]:
    okm = primitives.hkdf_sha256(seed, b"", HKDF_INFO_V1, 44)
    return okm[:32], okm[32:]


def _chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """Return ``(message_key_seed, next_chain_key)``."""
    return primitives.hmac_sha256_pair(chain_key, _MESSAGE_KEY_SEED, _CHAIN_KEY_SEED)


@dataclass(frozen=True, slots=True)
class SenderKeyDistribution:
    """A sender's current chain, handed to one member over a pairwise session.

    ``u8 1 || bytes16 group_id || str16 username || u32 device_id || u32 key_id ||
    u32 iteration || chain_key[32] || 0x02 || signing_public[32]``
    """

    group_id: bytes
    sender: DeviceAddress
    key_id: int
    iteration: int
    chain_key: bytes = field(repr=False)
    signing_public: Ed25519PublicKey

    def to_bytes(self) -> bytes:
        """Encode as documented on the class."""
        w = Writer().u8(DISTRIBUTION_VERSION).bytes16(self.group_id)
        self.sender.write(w)
        w.u32(self.key_id).u32(self.iteration).raw(self.chain_key)
        return w.raw(self.signing_public.to_bytes()).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyDistribution:
        """Decode :meth:`to_bytes` output; raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(data)
        r.version(DISTRIBUTION_VERSION)
        group_id = _read_group_id(r)
        sender = DeviceAddress.read(r)
        key_id = r.u32()
        iteration = r.u32()
        chain_key = r.raw(32)
        signing_public = Ed25519PublicKey.read(r)
        r.end()
        return cls(group_id, sender, key_id, iteration, chain_key, signing_public)


@dataclass(frozen=True, slots=True)
class SenderKeyMessage:
    """One group message: header, nonce, AES-256-GCM ciphertext, Ed25519 signature.

    Version 2 (sent)::

        header  = u8 2 || u8 kind (0x03) || bytes16 group_id || str16 username
                  || u32 device_id || u32 key_id || u32 iteration
        message = header || nonce[12] || bytes32 ciphertext || signature[64]

    The AEAD's associated data is ``header``; the signature covers
    ``"VoxSenderKeyMessage-v2" || 0x00 || header || nonce || bytes32 ciphertext``.
    Version 1 (decrypted only): ``header = u8 1 || bytes16 group_id || ... || u32 iteration``
    (no kind byte), no nonce field, label ``"VoxSenderKeyMessage-v1"``.
    """

    group_id: bytes
    sender: DeviceAddress
    key_id: int
    iteration: int
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    version: int = MESSAGE_VERSION

    def __post_init__(self) -> None:
        if self.version not in (MESSAGE_VERSION_V1, MESSAGE_VERSION):
            raise InvalidValue("version", f"unknown group message version {self.version}")
        want = primitives.AES_NONCE_LEN if self.version == MESSAGE_VERSION else 0
        if len(self.nonce) != want:
            raise InvalidValue("nonce", f"must be {want} bytes in version {self.version}")

    def header(self) -> bytes:
        """The encoded header (also the AEAD associated data)."""
        return _header(self.version, self.group_id, self.sender, self.key_id, self.iteration)

    def signed_part(self) -> bytes:
        """Everything the signature covers (without the label)."""
        return _signed(self.header(), self.nonce, self.ciphertext)

    def to_bytes(self) -> bytes:
        """Encode as documented on the class."""
        return self.signed_part() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyMessage:
        """Decode :meth:`to_bytes` output; raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(data)
        version = r.u8()
        if version not in (MESSAGE_VERSION_V1, MESSAGE_VERSION):
            raise UnsupportedVersion(MESSAGE_VERSION, version)
        if version == MESSAGE_VERSION:
            kind = r.u8()
            if kind != KIND_SENDER_KEY:
                raise InvalidValue("kind", f"group message kind {kind:#04x}, expected 0x03")
        group_id = _read_group_id(r)
        sender = DeviceAddress.read(r)
        key_id = r.u32()
        iteration = r.u32()
        nonce = r.raw(primitives.AES_NONCE_LEN) if version == MESSAGE_VERSION else b""
        ciphertext = r.bytes32("ciphertext")
        if len(ciphertext) < primitives.AES_TAG_LEN:
            raise InvalidValue("ciphertext", "shorter than the AES-GCM tag")
        signature = r.raw(primitives.ED25519_SIGNATURE_LEN)
        r.end()
        return cls(group_id, sender, key_id, iteration, nonce, ciphertext, signature, version)


def _header(
    version: int, group_id: bytes, sender: DeviceAddress, key_id: int, iteration: int
) -> bytes:
    return _header_prefix(version, group_id, sender) + _U32X2.pack(key_id, iteration)


@functools.lru_cache(maxsize=1024)
def _header_prefix(version: int, group_id: bytes, sender: DeviceAddress) -> bytes:
    """The header up to ``key_id`` (constant for one sender in one group)."""
    w = Writer().u8(version)
    if version == MESSAGE_VERSION:
        w.u8(KIND_SENDER_KEY)
    return sender.write(w.bytes16(group_id)).finish()


def _signed(header: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return header + nonce + _U32.pack(len(ciphertext)) + ciphertext


class SenderKeyState:
    """One sender key (one ``key_id``) of one sender in one group; sending or receiving.

    Build a sending state with :meth:`create`, a receiving one with :meth:`from_distribution`.
    """

    __slots__ = (
        "_chain_key",
        "_clock",
        "_group_id",
        "_iteration",
        "_key_id",
        "_sender",
        "_signer",
        "_signing_private",
        "_signing_public",
        "_skipped",
        "_stored_at",
        "_verifier",
    )

    def __init__(
        self,
        group_id: bytes,
        sender: DeviceAddress,
        key_id: int,
        iteration: int,
        chain_key: bytes,
        signing_public: bytes,
        signing_private: bytes | None = None,
        skipped: dict[int, bytes] | None = None,
    ) -> None:
        _check_group_id(group_id)
        if not 0 <= key_id <= 0xFFFFFFFF or not 0 <= iteration <= MAX_ITERATION:
            raise ValueError("key id and iteration are u32")
        if len(chain_key) != 32 or len(signing_public) != primitives.ED25519_KEY_LEN:
            raise ValueError("chain key and signing public key are 32 bytes")
        primitives.ed25519_check_public(signing_public, "sender key signing key")
        self._group_id = bytes(group_id)
        self._sender = sender
        self._key_id = key_id
        self._iteration = iteration
        self._chain_key = bytes(chain_key)
        self._signing_public = bytes(signing_public)
        self._signing_private = signing_private
        # Loaded on first use and kept (loading a key costs about as much as using it).
        self._signer: primitives.Ed25519Signer | None = None
        self._verifier: primitives.Ed25519Verifier | None = None
        self._skipped: dict[int, bytes] = dict(skipped or {})
        # When each skipped key was stored (the caller's clock, whole seconds; 0 = unknown)
        # and the latest clock this state was given.
        self._stored_at: dict[int, int] = dict.fromkeys(self._skipped, 0)
        self._clock = 0

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        group_id: bytes,
        sender: DeviceAddress,
        *,
        rng: Rng = primitives.random_bytes,
        avoid_key_id: int | None = None,
    ) -> SenderKeyState:
        """A fresh sending state: random ``key_id`` (u32), chain key and signing key."""
        while True:
            key_id = int.from_bytes(rng(4), "big")
            if key_id != avoid_key_id:
                break
        chain_key = rng(32)
        signing_private = primitives.ed25519_generate(rng)
        return cls(
            group_id,
            sender,
            key_id,
            0,
            chain_key,
            primitives.ed25519_public(signing_private),
            signing_private,
        )

    def rotate(self, *, rng: Rng = primitives.random_bytes) -> SenderKeyState:
        """A new sending state for the same group and sender with a different ``key_id``."""
        self._require_own("rotate")
        return SenderKeyState.create(
            self._group_id, self._sender, rng=rng, avoid_key_id=self._key_id
        )

    @classmethod
    def from_distribution(cls, distribution: SenderKeyDistribution) -> SenderKeyState:
        """A receiving state from a member's :class:`SenderKeyDistribution`."""
        return cls(
            distribution.group_id,
            distribution.sender,
            distribution.key_id,
            distribution.iteration,
            distribution.chain_key,
            distribution.signing_public.raw,
        )

    def distribution(self) -> SenderKeyDistribution:
        """The distribution message for our sending state, at its current iteration."""
        self._require_own("export a distribution")
        return SenderKeyDistribution(
            self._group_id,
            self._sender,
            self._key_id,
            self._iteration,
            self._chain_key,
            Ed25519PublicKey(self._signing_public),
        )

    # --- properties ---------------------------------------------------------------------

    @property
    def group_id(self) -> bytes:
        """The group this key belongs to."""
        return self._group_id

    @property
    def sender(self) -> DeviceAddress:
        """The device that sends under this key."""
        return self._sender

    @property
    def key_id(self) -> int:
        """The key's u32 identifier (a new one after each rotation)."""
        return self._key_id

    @property
    def iteration(self) -> int:
        """The next chain iteration (next to send, or next expected in order)."""
        return self._iteration

    @property
    def is_sending(self) -> bool:
        """True for our own sending state (it holds the private signing key)."""
        return self._signing_private is not None

    @property
    def skipped_count(self) -> int:
        """How many skipped message keys are stored."""
        return len(self._skipped)

    def __repr__(self) -> str:
        kind = "sending" if self.is_sending else "receiving"
        return (
            f"SenderKeyState({kind}, group={self._group_id.hex()}, sender={self._sender}, "
            f"key_id={self._key_id}, iteration={self._iteration}, skipped={len(self._skipped)})"
        )

    def _require_own(self, what: str) -> None:
        if self._signing_private is None:
            raise StateError(f"only our own sending state can {what}")

    # --- messages -----------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, rng: Rng = primitives.random_bytes) -> SenderKeyMessage:
        """Encrypt and sign one group message (version 2), advancing the chain by one.

        ``rng`` gives the message's 12-byte nonce.
        """
        return self._seal(plaintext, rng, MESSAGE_VERSION)

    def _seal(self, plaintext: bytes, rng: Rng, version: int) -> SenderKeyMessage:
        # ``version`` 1 exists only for the pinned v1 vectors; applications get version 2.
        self._require_own("encrypt")
        assert self._signing_private is not None
        if self._iteration >= MAX_ITERATION:
            raise StateError("sender key chain exhausted; rotate")
        seed, next_chain = _chain_step(self._chain_key)
        header = _header(version, self._group_id, self._sender, self._key_id, self._iteration)
        if version == MESSAGE_VERSION:
            nonce = primitives.random_nonce(rng)
            ciphertext = primitives.aes256gcm_encrypt(_message_key(seed), nonce, plaintext, header)
            label = SIGNATURE_LABEL
        else:
            nonce, label = b"", SIGNATURE_LABEL_V1
            key, derived_nonce = _message_key_v1(seed)
            ciphertext = primitives.aes256gcm_encrypt(key, derived_nonce, plaintext, header)
        signer = self._signer
        if signer is None:
            signer = self._signer = primitives.Ed25519Signer(self._signing_private)
        signed = _signed(header, nonce, ciphertext)
        signature = signer.sign(label + b"\x00" + signed)  # signing_message(label, signed)
        message = SenderKeyMessage(
            self._group_id,
            self._sender,
            self._key_id,
            self._iteration,
            nonce,
            ciphertext,
            signature,
            version,
        )
        self._chain_key = next_chain
        self._iteration += 1
        return message

    def expire_skipped(self, now: float) -> int:
        """Delete skipped message keys older than :data:`MAX_SKIPPED_AGE` at ``now``; return
        how many (keys of unknown age start aging now)."""
        self._clock = max(self._clock, int(now))
        return self._expire()

    def _expire(self) -> int:
        clock = self._clock
        if clock <= 0:
            return 0
        old = [i for i, at in self._stored_at.items() if at and clock - at > MAX_SKIPPED_AGE]
        for index in old:
            del self._skipped[index], self._stored_at[index]
        for index, at in self._stored_at.items():
            if not at:
                self._stored_at[index] = clock
        return len(old)

    def decrypt(self, message: SenderKeyMessage, *, now: float | None = None) -> bytes:
        """Verify the signature, then decrypt; commit the chain only on success.

        ``now`` (seconds since the epoch) is the caller's clock: a skipped message key older
        than :data:`MAX_SKIPPED_AGE` no longer opens its message (``DuplicateMessage``) and is
        deleted at this commit; without ``now`` nothing new expires.

        Raises :class:`~crypto.errors.SenderMismatch` (other group or sender),
        :class:`~crypto.errors.UnknownSenderKey` (other ``key_id``),
        :class:`~crypto.errors.AuthenticationFailed` (signature or tag),
        :class:`~crypto.errors.DuplicateMessage` or :class:`~crypto.errors.TooManySkipped`.
        """
        if self._signing_private is not None:
            raise StateError("a sending state does not decrypt; keep the plaintext you sent")
        if message.group_id != self._group_id or message.sender != self._sender:
            raise SenderMismatch(
                f"{self._sender} in group {self._group_id.hex()}",
                f"{message.sender} in group {message.group_id.hex()}",
            )
        if message.key_id != self._key_id:
            raise UnknownSenderKey(message.key_id)
        header = message.header()
        verifier = self._verifier
        if verifier is None:
            verifier = self._verifier = primitives.Ed25519Verifier(self._signing_public)
        try:
            label = SIGNATURE_LABEL if message.version == MESSAGE_VERSION else SIGNATURE_LABEL_V1
            signed = _signed(header, message.nonce, message.ciphertext)
            # signing_message(label, signed), the labels being constants
            verifier.verify(label + b"\x00" + signed, message.signature, "sender key message")
        except BadSignature as exc:
            raise AuthenticationFailed("sender key message signature does not verify") from exc

        target = message.iteration
        clock = self._clock if now is None else max(self._clock, int(now))
        chain_key, iteration = self._chain_key, self._iteration
        new_skipped: dict[int, bytes] = {}
        if target < iteration:
            seed = self._skipped.get(target)
            at = self._stored_at.get(target, 0)
            if seed is None or (at and clock - at > MAX_SKIPPED_AGE):
                raise DuplicateMessage(self._chain_id(), target)
        else:
            if target - iteration > MAX_SKIP:
                raise TooManySkipped(target - iteration, MAX_SKIP)
            while iteration < target:
                skipped_seed, chain_key = _chain_step(chain_key)
                new_skipped[iteration] = skipped_seed
                iteration += 1
            seed, chain_key = _chain_step(chain_key)
            iteration += 1
        if message.version == MESSAGE_VERSION:
            key, nonce = _message_key(seed), message.nonce
        else:
            key, nonce = _message_key_v1(seed)
        plaintext = primitives.aes256gcm_decrypt(key, nonce, message.ciphertext, header)

        # Success: commit.
        if target < self._iteration:
            del self._skipped[target], self._stored_at[target]
        else:
            self._chain_key, self._iteration = chain_key, iteration
            self._skipped.update(new_skipped)
            self._stored_at.update(dict.fromkeys(new_skipped, clock))
            while len(self._skipped) > MAX_SKIP:
                oldest = next(iter(self._skipped))
                del self._skipped[oldest], self._stored_at[oldest]
        if clock != self._clock:
            self._clock = clock
            self._expire()
        return plaintext

    def _chain_id(self) -> bytes:
        return self._group_id + struct.pack(">I", self._key_id)

    # --- serialization ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Encode the state (``docs/protocol-crypto-devices-groups-attachments.md`` §2.5).

        Secret material inside.
        """
        w = Writer().u8(STATE_VERSION).bytes16(self._group_id)
        self._sender.write(w)
        w.u32(self._key_id).u32(self._iteration).raw(self._chain_key)
        if self._signing_private is None:
            w.u8(0)
        else:
            w.u8(1).raw(self._signing_private)
        w.raw(Ed25519PublicKey(self._signing_public).to_bytes())
        w.u64(self._clock).u16(len(self._skipped))
        for iteration, seed in self._skipped.items():
            w.u32(iteration).raw(seed).u64(self._stored_at[iteration])
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyState:
        """Decode :meth:`to_bytes` output; raises only :class:`~crypto.errors.DecodeError`.

        Also reads state version 1 (no clock, no key ages: its keys start aging at the next
        clock reading).
        """
        r = Reader(data)
        version = r.u8()
        if version not in (STATE_VERSION_V1, STATE_VERSION):
            raise UnsupportedVersion(STATE_VERSION, version)
        group_id = _read_group_id(r)
        sender = DeviceAddress.read(r)
        key_id = r.u32()
        iteration = r.u32()
        chain_key = r.raw(32)
        private = r.raw(primitives.ED25519_KEY_LEN) if r.flag("has_private") else None
        public = Ed25519PublicKey.read(r).raw
        # Loading the seed derives its public key (a scalar multiplication): done once, and the
        # loaded key is kept for signing (the state would load it again at its first encrypt).
        signer = None if private is None else primitives.Ed25519Signer(private)
        if signer is not None and signer.public != public:
            raise InvalidValue("signing key", "private and public keys do not match")
        clock = r.u64() if version == STATE_VERSION else 0
        count = r.u16()
        if count > MAX_SKIP:
            raise FieldTooLarge("skipped keys", count, MAX_SKIP)
        skipped: dict[int, bytes] = {}
        stored_at: dict[int, int] = {}
        for _ in range(count):
            index = r.u32()
            if index >= iteration or index in skipped:
                raise InvalidValue("skipped keys", "index not before the chain or repeated")
            skipped[index] = r.raw(32)
            stored_at[index] = r.u64() if version == STATE_VERSION else 0
            if stored_at[index] > clock:
                raise InvalidValue("skipped keys", "stored after the state's clock")
        r.end()
        if private is not None and skipped:
            raise InvalidValue("skipped keys", "a sending state has no skipped keys")
        state = cls(group_id, sender, key_id, iteration, chain_key, public, private, skipped)
        state._stored_at, state._clock, state._signer = stored_at, clock, signer
        return state


class SenderKeyRecord:
    """The receiving states we hold for one sender device in one group, newest first.

    Rotation gives a sender a new ``key_id``; messages still in flight under an older key keep
    decrypting with the older state until it is evicted (at most
    :data:`MAX_STATES_PER_SENDER` states per record, oldest dropped first) or the caller
    :meth:`drop_older` them. Encoding: ``u8 1 || u8 count (1 ..= 5) || count x bytes32 state``
    (newest first).
    """

    __slots__ = ("_states",)

    def __init__(self, states: Iterable[SenderKeyState] = ()) -> None:
        self._states: list[SenderKeyState] = []
        for state in reversed(list(states)):
            self._insert(state)

    def _insert(self, state: SenderKeyState) -> None:
        if state.is_sending:
            raise StateError("a record holds receiving states only")
        if self._states:
            newest = self._states[0]
            if (state.group_id, state.sender) != (newest.group_id, newest.sender):
                raise SenderMismatch(
                    f"{newest.sender} in group {newest.group_id.hex()}",
                    f"{state.sender} in group {state.group_id.hex()}",
                )
        if any(s.key_id == state.key_id for s in self._states):
            return  # a re-sent distribution: keep the state we have (and its skipped keys)
        self._states.insert(0, state)
        del self._states[MAX_STATES_PER_SENDER:]

    def add(self, distribution: SenderKeyDistribution) -> SenderKeyState:
        """Import a distribution as the newest state (idempotent per ``key_id``)."""
        self._insert(SenderKeyState.from_distribution(distribution))
        return self.state(distribution.key_id)

    def state(self, key_id: int) -> SenderKeyState:
        """The state for ``key_id``; raise :class:`~crypto.errors.UnknownSenderKey`."""
        for state in self._states:
            if state.key_id == key_id:
                return state
        raise UnknownSenderKey(key_id)

    @property
    def key_ids(self) -> tuple[int, ...]:
        """Key ids held, newest first."""
        return tuple(s.key_id for s in self._states)

    def drop_older(self) -> None:
        """Forget every state but the newest (late messages under them become unknown)."""
        del self._states[1:]

    def decrypt(self, message: SenderKeyMessage, *, now: float | None = None) -> bytes:
        """Decrypt with the state named by ``message.key_id`` (commit on success; ``now`` as
        in :meth:`SenderKeyState.decrypt`)."""
        return self.state(message.key_id).decrypt(message, now=now)

    def __repr__(self) -> str:
        return f"SenderKeyRecord(key_ids={list(self.key_ids)})"

    def to_bytes(self) -> bytes:
        """Encode as ``u8 1 || u8 count || count x bytes32 state`` (newest first)."""
        w = Writer().u8(RECORD_VERSION).u8(len(self._states))
        for state in self._states:
            w.bytes32(state.to_bytes())
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyRecord:
        """Decode :meth:`to_bytes` output; raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(data)
        r.version(RECORD_VERSION)
        count = r.u8()
        if not 1 <= count <= MAX_STATES_PER_SENDER:
            raise InvalidValue("states", f"count must be 1..{MAX_STATES_PER_SENDER}")
        states = [SenderKeyState.from_bytes(r.bytes32("state", 64 * 1024)) for _ in range(count)]
        r.end()
        first = states[0]
        if any(s.is_sending for s in states):
            raise InvalidValue("states", "a record holds receiving states only")
        if any((s.group_id, s.sender) != (first.group_id, first.sender) for s in states):
            raise InvalidValue("states", "states of different groups or senders")
        if len({s.key_id for s in states}) != count:
            raise InvalidValue("states", "repeated key id")
        record = cls()
        record._states = states
        return record

"""PQXDH key agreement (Signal's PQXDH specification, revision 3) with ML-KEM-768.

Notation as in the specification; ``IK`` are X25519 device identity keys, ``SPK`` the
responder's signed prekey, ``OPK`` an optional one-time prekey, ``PQPK`` an ML-KEM-768
prekey (one-time or last resort) and ``EK`` the initiator's ephemeral ("base") key::

    DH1 = X25519(IK_A, SPK_B)     DH2 = X25519(EK_A, IK_B)
    DH3 = X25519(EK_A, SPK_B)     DH4 = X25519(EK_A, OPK_B)   (only with a one-time prekey)
    (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(ikm = F || DH1 || DH2 || DH3 [|| DH4] || SS,
                     salt = 32 zero bytes, info = PQXDH_INFO, L = 32)

with ``F`` = 32 bytes of 0xFF. The initiator verifies both prekey signatures with the
responder's account key before any DH. The associated data binds both devices::

    AD = initiator (str16 username || u32 device_id || typed account key || typed IK)
         || responder (same four fields)

The Double Ratchet then starts as in Signal's specification §3.3: the initiator draws
its first ratchet key pair and derives ``RK, CKs = KDF_RK(SK, X25519(DHs, SPK_B))``; the
responder's first ratchet key pair is its signed prekey.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.encoding import Writer
from crypto.envelope import InitialMessage, PqxdhPrefix, decode_message
from crypto.errors import InvalidValue, UnknownPrekey
from crypto.keys import (
    DeviceAddress,
    DeviceIdentityKey,
    Ed25519PublicKey,
    KemPrekey,
    OneTimePrekey,
    PeerDevice,
    PrekeyBundle,
    SignedPrekey,
    X25519PublicKey,
)
from crypto.ratchet.root_chain import RootKey
from crypto.ratchet.session import RatchetConfig, Session, initial_digest

__all__ = [
    "PQXDH_INFO",
    "AcceptedSession",
    "ConsumedPrekeys",
    "LocalDevice",
    "PrekeySecrets",
    "accept_session",
    "associated_data",
    "initiate_session",
    "initiate_session_with_encapsulation",
    "shared_secret",
]

PQXDH_INFO: Final = b"VoxPQXDH_CURVE25519_SHA-256_ML-KEM-768"
_F: Final = b"\xff" * 32
_SALT: Final = bytes(32)


@dataclass(frozen=True, slots=True)
class LocalDevice:
    """This device: its address, the account's public key and its identity key."""

    address: DeviceAddress
    account_key: Ed25519PublicKey
    identity_key: DeviceIdentityKey = field(repr=False)

    @property
    def public(self) -> PeerDevice:
        """This device as peers see it."""
        return PeerDevice(self.address, self.account_key, self.identity_key.public_key)


@dataclass(frozen=True, slots=True)
class PrekeySecrets:
    """The responder's private prekeys, looked up by key id."""

    signed_prekeys: Mapping[int, SignedPrekey]
    kem_prekeys: Mapping[int, KemPrekey]
    one_time_prekeys: Mapping[int, OneTimePrekey]

    def __repr__(self) -> str:
        return (
            f"PrekeySecrets(signed={sorted(self.signed_prekeys)}, kem={sorted(self.kem_prekeys)},"
            f" one_time={len(self.one_time_prekeys)} keys)"
        )


@dataclass(frozen=True, slots=True)
class ConsumedPrekeys:
    """Prekeys an accepted initial message used up: the caller must delete them."""

    one_time_prekey_id: int | None
    kem_prekey_id: int | None
    """The one-time KEM prekey id, or ``None`` when the last-resort KEM prekey was used."""


@dataclass(frozen=True, slots=True)
class AcceptedSession:
    """What :func:`accept_session` returns: the new session, the first body, and the
    prekeys to delete."""

    session: Session
    body: bytes = field(repr=False)
    consumed: ConsumedPrekeys


def associated_data(initiator: PeerDevice, responder: PeerDevice) -> bytes:
    """``AD`` = encoded initiator then responder (see the module docstring)."""
    return responder.write(initiator.write(Writer())).finish()


def shared_secret(dh_outputs: list[bytes], kem_secret: bytes) -> bytes:
    """``SK = HKDF-SHA256(F || DH1 || ... || SS, salt = 0^32, info = PQXDH_INFO, 32)``."""
    ikm = _F + b"".join(dh_outputs) + kem_secret
    return p.hkdf_sha256(ikm, _SALT, PQXDH_INFO, 32)


def initiate_session(
    local: LocalDevice,
    bundle: PrekeyBundle,
    *,
    rng: p.Rng = p.random_bytes,
    config: RatchetConfig | None = None,
) -> Session:
    """Start a session with the device that published ``bundle``.

    Verifies every signature in the bundle (``BadSignature``), encapsulates to its KEM
    prekey, and returns a session whose messages carry the PQXDH prefix until the peer
    replies. Raises ``InvalidPublicKey`` for a malformed or low-order key in the bundle.
    ``rng`` is read twice: 32 bytes for ``EK_A``, then 32 bytes for the first ratchet key.
    """
    bundle.verify()
    encapsulation = p.mlkem768_encapsulate(bundle.kem_prekey.public_key.raw)
    return _initiate(local, bundle, encapsulation, rng, config)


def initiate_session_with_encapsulation(
    local: LocalDevice,
    bundle: PrekeyBundle,
    encapsulation: tuple[bytes, bytes],
    *,
    rng: p.Rng = p.random_bytes,
    config: RatchetConfig | None = None,
) -> Session:
    """:func:`initiate_session` with a given ML-KEM ``(ciphertext, shared secret)``.

    ``cryptography`` draws ML-KEM encapsulation randomness itself, so the fixed-vector
    generator uses this entry point with a pinned encapsulation. Applications call
    :func:`initiate_session`.
    """
    bundle.verify()
    kem_ciphertext, kem_secret = encapsulation
    if len(kem_ciphertext) != p.MLKEM768_CIPHERTEXT_LEN or len(kem_secret) != 32:
        raise InvalidValue("encapsulation", "wrong ML-KEM-768 ciphertext or secret size")
    return _initiate(local, bundle, encapsulation, rng, config)


def _initiate(
    local: LocalDevice,
    bundle: PrekeyBundle,
    encapsulation: tuple[bytes, bytes],
    rng: p.Rng,
    config: RatchetConfig | None,
) -> Session:
    kem_ciphertext, kem_secret = encapsulation
    ephemeral = p.X25519KeyPair.generate(rng)
    spk = bundle.signed_prekey.public_key
    dhs = [
        local.identity_key.exchange(spk),
        ephemeral.exchange(bundle.identity_key.raw),
        ephemeral.exchange(spk.raw),
    ]
    if bundle.one_time_prekey is not None:
        dhs.append(ephemeral.exchange(bundle.one_time_prekey.public_key.raw))
    sk = shared_secret(dhs, kem_secret)
    peer = PeerDevice(bundle.address, bundle.account_key, bundle.identity_key)
    base_key = X25519PublicKey(ephemeral.public)
    one_time = bundle.one_time_prekey
    prefix = PqxdhPrefix(
        sender=local.address,
        account_key=local.account_key,
        identity_key=local.identity_key.public_key,
        base_key=base_key,
        signed_prekey_id=bundle.signed_prekey.key_id,
        kem_prekey_id=bundle.kem_prekey.key_id,
        one_time_prekey_id=None if one_time is None else one_time.key_id,
        kem_ciphertext=kem_ciphertext,
    )
    ratchet = p.X25519KeyPair.generate(rng)
    root, sending = RootKey(sk).advance(ratchet.exchange(spk.raw))
    return Session(
        local=local.address,
        peer=peer,
        associated_data=associated_data(local.public, peer),
        root_key=root,
        self_key=ratchet,
        remote_key=spk,
        sending=sending,
        base_key=base_key,
        initial_digest=initial_digest(prefix),
        pending=prefix,
        config=config or RatchetConfig(),
    )


def accept_session(
    local: LocalDevice,
    prekeys: PrekeySecrets,
    message: bytes | InitialMessage,
    *,
    config: RatchetConfig | None = None,
    now: float | None = None,
) -> AcceptedSession:
    """Build the responder's session from an initial message and decrypt its body.

    Raises ``DecodeError`` (malformed, or not an initial message), ``UnknownPrekey``
    (a named prekey is not held), ``InvalidPublicKey`` (bad or low-order key), and the
    decrypt errors of :meth:`Session.decrypt`. The caller must check the initiator's
    identity (``result.session.peer``) against its signed device list, then delete the
    prekeys named in ``result.consumed``.
    """
    if isinstance(message, bytes):
        decoded = decode_message(message)
        if not isinstance(decoded, InitialMessage):
            raise InvalidValue("kind", "expected an initial (PQXDH) message")
        message = decoded
    prefix = message.prefix
    spk = prekeys.signed_prekeys.get(prefix.signed_prekey_id)
    if spk is None:
        raise UnknownPrekey("signed", prefix.signed_prekey_id)
    kem = prekeys.kem_prekeys.get(prefix.kem_prekey_id)
    if kem is None:
        raise UnknownPrekey("kem", prefix.kem_prekey_id)
    opk: OneTimePrekey | None = None
    if prefix.one_time_prekey_id is not None:
        opk = prekeys.one_time_prekeys.get(prefix.one_time_prekey_id)
        if opk is None:
            raise UnknownPrekey("one-time", prefix.one_time_prekey_id)
    dhs = [
        spk.exchange(prefix.identity_key),
        local.identity_key.exchange(prefix.base_key),
        spk.exchange(prefix.base_key),
    ]
    if opk is not None:
        dhs.append(opk.exchange(prefix.base_key))
    sk = shared_secret(dhs, kem.decapsulate(prefix.kem_ciphertext))
    peer = PeerDevice(prefix.sender, prefix.account_key, prefix.identity_key)
    session = Session(
        local=local.address,
        peer=peer,
        associated_data=associated_data(peer, local.public),
        root_key=RootKey(sk),
        self_key=spk.key_pair,
        remote_key=None,
        sending=None,
        base_key=prefix.base_key,
        initial_digest=initial_digest(prefix),
        pending=None,
        config=config or RatchetConfig(),
    )
    body = session.decrypt_message(message, now=now)
    consumed = ConsumedPrekeys(
        one_time_prekey_id=prefix.one_time_prekey_id,
        kem_prekey_id=None if kem.last_resort else kem.key_id,
    )
    return AcceptedSession(session, body, consumed)

"""Shared builders for the crypto tests: devices with one of each prekey, and a session pair."""

from __future__ import annotations

from dataclasses import dataclass

from crypto import primitives as p
from crypto.keys import (
    AccountKey,
    DeviceAddress,
    DeviceIdentityKey,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from crypto.pqxdh import LocalDevice, PrekeySecrets, accept_session, initiate_session
from crypto.ratchet.session import RatchetConfig, Session

__all__ = ["LOW_ORDER", "Device", "make_device", "make_pair"]

# A low-order X25519 point (order 8), from Wycheproof x25519 (ZeroSharedSecret).
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@dataclass
class Device:
    """A device with its account key and one of each prekey (ids 1 / 2 / 3)."""

    account: AccountKey
    local: LocalDevice
    signed: SignedPrekey
    kem: KemPrekey
    one_time: OneTimePrekey

    def bundle(self, *, one_time: bool = True) -> PrekeyBundle:
        return PrekeyBundle(
            self.local.address,
            self.account.public_key,
            self.local.identity_key.public_key,
            self.signed.to_public(),
            self.kem.to_public(),
            self.one_time.to_public() if one_time else None,
        )

    def secrets(self) -> PrekeySecrets:
        return PrekeySecrets({1: self.signed}, {2: self.kem}, {3: self.one_time})


def make_device(username: str, device_id: int, rng: p.Rng, *, last_resort: bool = False) -> Device:
    account = AccountKey.generate(rng)
    identity = DeviceIdentityKey.generate(rng)
    local = LocalDevice(DeviceAddress(username, device_id), account.public_key, identity)
    signed = SignedPrekey.generate(1, account, identity.public_key, rng)
    kem = KemPrekey.generate(2, account, identity.public_key, last_resort=last_resort, rng=rng)
    return Device(account, local, signed, kem, OneTimePrekey.generate(3, rng))


def make_pair(
    seed: bytes = b"pair", *, config: RatchetConfig | None = None, one_time: bool = True
) -> tuple[Session, Session, p.DeterministicRng]:
    """Alice initiates, Bob accepts Alice's first message (``b"hello"``)."""
    rng = p.DeterministicRng(seed)
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    session = initiate_session(alice.local, bob.bundle(one_time=one_time), rng=rng, config=config)
    accepted = accept_session(
        bob.local, bob.secrets(), session.encrypt(b"hello", rng), config=config
    )
    assert accepted.body == b"hello"
    return session, accepted.session, rng

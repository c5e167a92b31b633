"""Keys: typed encodings both ways, private-key serialization, signatures, secrecy of repr."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import primitives as p
from crypto.errors import BadSignature, DecodeError, InvalidValue, Truncated, UnsupportedVersion
from crypto.keys import (
    AccountKey,
    DeviceAddress,
    DeviceAuthKey,
    DeviceIdentityKey,
    Ed25519PublicKey,
    KemPrekey,
    KemPrekeyPublic,
    MlKem768PublicKey,
    OneTimePrekey,
    OneTimePrekeyPublic,
    PeerDevice,
    PrekeyBundle,
    SignedPrekey,
    SignedPrekeyPublic,
    X25519PublicKey,
    validate_username,
)

RNG = p.DeterministicRng(b"keys")
ACCOUNT = AccountKey.generate(RNG)
IDENTITY = DeviceIdentityKey.generate(RNG)
AUTH = DeviceAuthKey.generate(RNG)
SPK = SignedPrekey.generate(5, ACCOUNT, IDENTITY.public_key, RNG)
KEM = KemPrekey.generate(6, ACCOUNT, IDENTITY.public_key, last_resort=True, rng=RNG)
OTK = OneTimePrekey.generate(7, RNG)
BUNDLE = PrekeyBundle(
    DeviceAddress("bob", 3),
    ACCOUNT.public_key,
    IDENTITY.public_key,
    SPK.to_public(),
    KEM.to_public(),
    OTK.to_public(),
)


def test_public_keys_encode_with_their_type_prefix_both_ways() -> None:
    raw32 = bytes(range(32))
    assert X25519PublicKey(raw32).to_bytes() == b"\x01" + raw32
    assert Ed25519PublicKey(raw32).to_bytes() == b"\x02" + raw32
    kem_raw = KEM.public_key.raw
    assert MlKem768PublicKey(kem_raw).to_bytes() == b"\x03" + kem_raw
    assert X25519PublicKey.from_bytes(b"\x01" + raw32) == X25519PublicKey(raw32)
    assert Ed25519PublicKey.from_bytes(b"\x02" + raw32) == Ed25519PublicKey(raw32)
    assert MlKem768PublicKey.from_bytes(b"\x03" + kem_raw) == MlKem768PublicKey(kem_raw)


def test_public_key_decoders_reject_wrong_prefix_size_and_non_canonical_x25519() -> None:
    raw32 = bytes(range(32))
    with pytest.raises(InvalidValue):
        X25519PublicKey.from_bytes(b"\x02" + raw32)
    with pytest.raises(InvalidValue):
        Ed25519PublicKey.from_bytes(b"\x01" + raw32)
    with pytest.raises(Truncated):
        X25519PublicKey.from_bytes(b"\x01" + raw32[:31])
    with pytest.raises(DecodeError):
        X25519PublicKey.from_bytes(b"\x01" + raw32 + b"\x00")
    with pytest.raises(InvalidValue):
        X25519PublicKey(b"\xff" * 31 + b"\x7f")  # 2^255 - 1 >= p
    with pytest.raises(InvalidValue):
        X25519PublicKey(raw32[:31] + b"\x80")  # top bit set
    with pytest.raises(InvalidValue):
        X25519PublicKey(bytes(31))


def test_private_keys_serialize_with_version_and_kind_and_round_trip() -> None:
    assert ACCOUNT.to_bytes() == b"\x01\x11" + ACCOUNT.private
    assert IDENTITY.to_bytes() == b"\x01\x12" + IDENTITY.private
    assert AUTH.to_bytes() == b"\x01\x13" + AUTH.private
    assert SPK.to_bytes() == b"\x01\x14\x00\x00\x00\x05" + SPK.private + SPK.signature
    assert KEM.to_bytes() == b"\x01\x15\x00\x00\x00\x06\x01" + KEM.seed + KEM.signature
    assert OTK.to_bytes() == b"\x01\x16\x00\x00\x00\x07" + OTK.private
    for key in (ACCOUNT, IDENTITY, AUTH, SPK, KEM, OTK):
        assert type(key).from_bytes(key.to_bytes()) == key


def test_private_key_decoders_reject_other_kinds_versions_and_lengths() -> None:
    with pytest.raises(InvalidValue):
        AccountKey.from_bytes(AUTH.to_bytes())  # an auth key is not an account key
    with pytest.raises(UnsupportedVersion):
        AccountKey.from_bytes(b"\x02" + ACCOUNT.to_bytes()[1:])
    with pytest.raises(DecodeError):
        SignedPrekey.from_bytes(SPK.to_bytes()[:-1])
    with pytest.raises(DecodeError):
        OneTimePrekey.from_bytes(OTK.to_bytes() + b"\x00")
    with pytest.raises(InvalidValue):
        KemPrekey.from_bytes(KEM.to_bytes()[:6] + b"\x02" + KEM.to_bytes()[7:])


def test_reprs_of_secret_holders_show_no_key_bytes() -> None:
    secrets = {
        ACCOUNT: [ACCOUNT.private],
        IDENTITY: [IDENTITY.private],
        AUTH: [AUTH.private],
        SPK: [SPK.private],
        KEM: [KEM.seed],
        OTK: [OTK.private],
    }
    for holder, values in secrets.items():
        text = repr(holder) + str(holder)
        for value in values:
            assert value.hex() not in text
            assert value.hex()[:16] not in text
            assert repr(value) not in text


def test_prekey_signatures_cover_identity_key_id_and_key() -> None:
    data = IDENTITY.public_key.to_bytes() + b"\x00\x00\x00\x05" + SPK.public_key.to_bytes()
    p.ed25519_verify(ACCOUNT.public_key.raw, b"VoxSignedPrekey-v1\x00" + data, SPK.signature, "spk")
    kem_data = IDENTITY.public_key.to_bytes() + b"\x00\x00\x00\x06\x01" + KEM.public_key.to_bytes()
    p.ed25519_verify(ACCOUNT.public_key.raw, b"VoxKemPrekey-v1\x00" + kem_data, KEM.signature)
    BUNDLE.verify()
    other = DeviceIdentityKey.generate(RNG).public_key
    with pytest.raises(BadSignature):
        SPK.to_public().verify(ACCOUNT.public_key, other)
    with pytest.raises(BadSignature):
        KEM.to_public().verify(AccountKey.generate(RNG).public_key, IDENTITY.public_key)


def test_bundle_encoding_is_exact_and_round_trips_with_and_without_one_time_key() -> None:
    data = BUNDLE.to_bytes()
    expected = (
        b"\x01\x00\x03bob\x00\x00\x00\x03"
        + ACCOUNT.public_key.to_bytes()
        + IDENTITY.public_key.to_bytes()
        + b"\x00\x00\x00\x05"
        + SPK.public_key.to_bytes()
        + SPK.signature
        + b"\x00\x00\x00\x06\x01"
        + KEM.public_key.to_bytes()
        + KEM.signature
        + b"\x01\x00\x00\x00\x07"
        + OTK.public_key.to_bytes()
    )
    assert data == expected
    assert len(SPK.to_public().to_bytes()) == 101
    assert len(KEM.to_public().to_bytes()) == 1254
    assert len(OTK.to_public().to_bytes()) == 37
    assert PrekeyBundle.from_bytes(data) == BUNDLE
    without = PrekeyBundle(
        BUNDLE.address,
        BUNDLE.account_key,
        BUNDLE.identity_key,
        BUNDLE.signed_prekey,
        BUNDLE.kem_prekey,
    )
    assert without.to_bytes() == expected[: -(1 + 37)] + b"\x00"
    assert PrekeyBundle.from_bytes(without.to_bytes()) == without


def test_usernames_and_device_ids_are_validated() -> None:
    for good in ("bob", "a.b-c_9", "x" * 32):
        assert validate_username(good) == good
    for bad in ("Bob", "ab", "x" * 33, "bob!", "bö b", "bob\n"):
        with pytest.raises(InvalidValue):
            validate_username(bad)
    with pytest.raises(InvalidValue):
        DeviceAddress("bob", 0)
    with pytest.raises(InvalidValue):
        DeviceAddress("bob", 2**32)
    assert str(DeviceAddress("bob", 4)) == "bob:4"


DECODERS: list[Callable[[bytes], Any]] = [
    X25519PublicKey.from_bytes,
    Ed25519PublicKey.from_bytes,
    MlKem768PublicKey.from_bytes,
    SignedPrekeyPublic.from_bytes,
    KemPrekeyPublic.from_bytes,
    OneTimePrekeyPublic.from_bytes,
    PrekeyBundle.from_bytes,
    AccountKey.from_bytes,
    DeviceIdentityKey.from_bytes,
    DeviceAuthKey.from_bytes,
    SignedPrekey.from_bytes,
    KemPrekey.from_bytes,
    OneTimePrekey.from_bytes,
]
SAMPLES = [
    IDENTITY.public_key.to_bytes(),
    ACCOUNT.public_key.to_bytes(),
    KEM.public_key.to_bytes(),
    SPK.to_public().to_bytes(),
    KEM.to_public().to_bytes(),
    OTK.to_public().to_bytes(),
    BUNDLE.to_bytes(),
    ACCOUNT.to_bytes(),
    IDENTITY.to_bytes(),
    AUTH.to_bytes(),
    SPK.to_bytes(),
    KEM.to_bytes(),
    OTK.to_bytes(),
]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(DECODERS) - 1), st.binary(max_size=300))
def test_key_decoders_raise_only_decode_error_on_arbitrary_bytes(which: int, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[which](data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(DECODERS) - 1), st.integers(0, 5000), st.integers(0, 255))
def test_key_decoders_on_mutated_valid_encodings(which: int, index: int, value: int) -> None:
    data = bytearray(SAMPLES[which])
    data[index % len(data)] = value
    with contextlib.suppress(DecodeError):
        DECODERS[which](bytes(data)[: max(1, len(data) - index % 3)])


def test_decoders_accept_their_own_samples() -> None:
    for decode, sample in zip(DECODERS, SAMPLES, strict=True):
        assert decode(sample).to_bytes() == sample
    peer = PeerDevice(BUNDLE.address, BUNDLE.account_key, BUNDLE.identity_key)
    assert peer.address.username == "bob"

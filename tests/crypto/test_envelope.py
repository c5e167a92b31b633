"""Envelopes: the payload with the in-ciphertext sender, and the two outer message kinds."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.envelope import (
    InitialMessage,
    Payload,
    PqxdhPrefix,
    RatchetMessage,
    decode_message,
    message_associated_data,
)
from crypto.errors import DecodeError, FieldTooLarge, InvalidValue, UnsupportedVersion
from crypto.keys import DeviceAddress, Ed25519PublicKey, X25519PublicKey
from crypto.ratchet.header import Header

KEY = X25519PublicKey(bytes(range(32)))
NONCE = bytes(range(0x60, 0x6C))
HEADER = Header(KEY, 7, 9)
PREFIX = PqxdhPrefix(
    sender=DeviceAddress("alice", 2),
    account_key=Ed25519PublicKey(b"\x0a" * 32),
    identity_key=X25519PublicKey(b"\x0b" * 32),
    base_key=X25519PublicKey(b"\x0c" * 32),
    signed_prekey_id=1,
    kem_prekey_id=2,
    one_time_prekey_id=3,
    kem_ciphertext=b"\x0d" * 1088,
)


def test_payload_carries_the_sender_and_body_exactly() -> None:
    payload = Payload(DeviceAddress("alice", 2), b"hi")
    data = payload.to_bytes()
    assert data == b"\x01\x00\x05alice\x00\x00\x00\x02\x00\x00\x00\x02hi"
    assert Payload.from_bytes(data) == payload
    with pytest.raises(InvalidValue):
        Payload.from_bytes(b"\x01\x00\x05Alice\x00\x00\x00\x02\x00\x00\x00\x00")
    with pytest.raises(InvalidValue):
        Payload.from_bytes(b"\x01\x00\x05alice\x00\x00\x00\x00\x00\x00\x00\x00")
    with pytest.raises(FieldTooLarge):
        Payload.from_bytes(b"\x01\x00\x21" + b"a" * 33 + b"\x00\x00\x00\x01\x00\x00\x00\x00")


def test_header_is_41_bytes() -> None:
    data = HEADER.to_bytes()
    assert data == b"\x01" + bytes(range(32)) + b"\x00\x00\x00\x07\x00\x00\x00\x09"
    assert len(data) == 41


def test_ratchet_message_encoding_both_ways() -> None:
    message = RatchetMessage(HEADER, NONCE, b"\xee" * 20)
    data = message.to_bytes()
    assert data == b"\x02\x01" + HEADER.to_bytes() + NONCE + b"\x00\x00\x00\x14" + b"\xee" * 20
    assert decode_message(data) == message


def test_version_1_ratchet_message_has_no_nonce_and_still_decodes() -> None:
    message = RatchetMessage(HEADER, b"", b"\xee" * 20, version=1)
    data = message.to_bytes()
    assert data == b"\x01\x01" + HEADER.to_bytes() + b"\x00\x00\x00\x14" + b"\xee" * 20
    assert decode_message(data) == message


def test_the_nonce_length_must_match_the_version() -> None:
    with pytest.raises(InvalidValue):
        RatchetMessage(HEADER, b"", b"\xee" * 16)
    with pytest.raises(InvalidValue):
        RatchetMessage(HEADER, NONCE, b"\xee" * 16, version=1)
    with pytest.raises(InvalidValue):
        RatchetMessage(HEADER, NONCE, b"\xee" * 16, version=3)


def test_associated_data_binds_version_and_kind_in_version_2_only() -> None:
    header = HEADER.to_bytes()
    assert message_associated_data(b"AD", 2, 0x01, header) == b"AD\x02\x01" + header
    assert message_associated_data(b"AD", 2, 0x02, header) == b"AD\x02\x02" + header
    assert message_associated_data(b"AD", 1, 0x02, header) == b"AD" + header


def test_initial_message_encoding_both_ways_with_and_without_one_time_prekey() -> None:
    message = InitialMessage(PREFIX, RatchetMessage(HEADER, NONCE, b"\xee" * 16))
    data = message.to_bytes()
    prefix = (
        b"\x00\x05alice\x00\x00\x00\x02"
        + b"\x02"
        + b"\x0a" * 32
        + b"\x01"
        + b"\x0b" * 32
        + b"\x01"
        + b"\x0c" * 32
        + b"\x00\x00\x00\x01\x00\x00\x00\x02\x01\x00\x00\x00\x03"
        + b"\x0d" * 1088
    )
    body = HEADER.to_bytes() + NONCE + b"\x00\x00\x00\x10" + b"\xee" * 16
    assert data == b"\x02\x02" + prefix + body
    assert decode_message(data) == message
    without = InitialMessage(
        PqxdhPrefix(
            PREFIX.sender,
            PREFIX.account_key,
            PREFIX.identity_key,
            PREFIX.base_key,
            1,
            2,
            None,
            PREFIX.kem_ciphertext,
        ),
        message.message,
    )
    assert decode_message(without.to_bytes()) == without
    assert len(without.to_bytes()) == len(data) - 4


def test_decoder_rejects_unknown_version_kind_and_short_ciphertext() -> None:
    good = RatchetMessage(HEADER, NONCE, b"\xee" * 16).to_bytes()
    for version in (0, 3, 255):
        with pytest.raises(UnsupportedVersion):
            decode_message(bytes([version]) + good[1:])
    with pytest.raises(InvalidValue):
        decode_message(b"\x02\x03" + good[2:])
    with pytest.raises(InvalidValue):
        decode_message(b"\x01\x01" + HEADER.to_bytes() + b"\x00\x00\x00\x0f" + b"\xee" * 15)
    with pytest.raises(FieldTooLarge):
        decode_message(b"\x01\x01" + HEADER.to_bytes() + b"\xff\xff\xff\xff")
    with pytest.raises(InvalidValue):
        PqxdhPrefix(
            PREFIX.sender,
            PREFIX.account_key,
            PREFIX.identity_key,
            PREFIX.base_key,
            1,
            2,
            None,
            b"short",
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_message_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_payload_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Payload.from_bytes(data)


_SAMPLES = [
    InitialMessage(PREFIX, RatchetMessage(HEADER, NONCE, b"\xee" * 16)).to_bytes(),
    RatchetMessage(HEADER, NONCE, b"\xee" * 40).to_bytes(),
    Payload(DeviceAddress("bob", 1), b"body").to_bytes(),
]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2), st.integers(0, 5000), st.integers(0, 255), st.integers(0, 3))
def test_mutated_valid_envelopes_decode_or_raise_decode_error(
    which: int, index: int, value: int, cut: int
) -> None:
    data = bytearray(_SAMPLES[which])
    data[index % len(data)] = value
    mutated = bytes(data)[: len(data) - cut]
    with contextlib.suppress(DecodeError):
        if which == 2:
            Payload.from_bytes(mutated)
        else:
            decode_message(mutated)

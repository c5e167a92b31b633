"""The relay's own device-list verifier agrees with the client's (crypto/device_list.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.device_list import DeviceEntry, DeviceList
from crypto.device_list import SignedDeviceList as ClientSignedList
from crypto.keys import AccountKey, DeviceAuthKey, DeviceIdentityKey
from server.accounts.device_list import DeviceListError, parse_device_list
from tests.server.relay_harness import TestAccount


def _client_list(version: int, ids: list[int]) -> tuple[AccountKey, bytes, list[DeviceEntry]]:
    account = AccountKey.generate()
    entries = [
        DeviceEntry(i, DeviceIdentityKey.generate().public_key, DeviceAuthKey.generate().public_key)
        for i in ids
    ]
    signed = DeviceList("alice", version, tuple(entries)).sign(account)
    return account, signed.to_bytes(), entries


def test_a_client_built_list_verifies_on_the_relay() -> None:
    account, blob, entries = _client_list(7, [1, 4, 900])
    parsed = parse_device_list(blob)
    parsed.verify(account.public_key.to_bytes())
    assert parsed.username == "alice" and parsed.version == 7
    assert [d.device_id for d in parsed.devices] == [1, 4, 900]
    assert [d.identity_key for d in parsed.devices] == [e.identity_key.to_bytes() for e in entries]
    assert [d.auth_key for d in parsed.devices] == [e.auth_key.to_bytes() for e in entries]


def test_a_harness_built_list_parses_on_the_client_too() -> None:
    bob = TestAccount.new("bob", device_ids=(2, 3))
    blob = bob.device_list(5)
    client = ClientSignedList.from_bytes(blob)
    from crypto.keys import Ed25519PublicKey

    client.verify(Ed25519PublicKey.from_bytes(bob.account_key), username="bob")
    assert client.device_list.device_ids == (2, 3)


def test_any_flipped_bit_is_refused() -> None:
    account, blob, _ = _client_list(2, [1, 2])
    key = account.public_key.to_bytes()
    for i in range(0, len(blob) * 8, 7):
        flipped = bytearray(blob)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DeviceListError):
            parse_device_list(bytes(flipped)).verify(key)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_device_list_error(data: bytes) -> None:
    with contextlib.suppress(DeviceListError):
        parse_device_list(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncations_and_extensions_of_a_valid_list_are_refused(data: st.DataObject) -> None:
    account, blob, _ = _client_list(3, [1, 2, 3])
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(DeviceListError):
        parse_device_list(blob[:cut]).verify(account.public_key.to_bytes())
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(DeviceListError):
        parse_device_list(blob + extra).verify(account.public_key.to_bytes())


def test_non_canonical_identity_key_is_refused() -> None:
    bob = TestAccount.new("bob")
    body = bytearray(bob.device_list(1))
    offset = 1 + 2 + 3 + 8 + 2 + 4 + 1  # start of the first identity key's 32 bytes
    body[offset : offset + 32] = b"\xff" * 32
    with pytest.raises(DeviceListError, match="canonical"):
        parse_device_list(bytes(body))

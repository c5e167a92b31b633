from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.device_list import (
    DEVICE_LIST_LABEL,
    MAX_DEVICES,
    DeviceEntry,
    DeviceList,
    SignedDeviceList,
)
from crypto.encoding import Writer
from crypto.errors import (
    BadSignature,
    DecodeError,
    DeviceListAccountMismatch,
    DeviceListRollback,
    FieldTooLarge,
    InvalidValue,
    TrailingBytes,
    Truncated,
    UnknownDevice,
    UnsupportedVersion,
)
from crypto.keys import AccountKey, DeviceAuthKey, DeviceIdentityKey
from crypto.primitives import DeterministicRng


def make_entry(device_id: int, seed: bytes = b"") -> DeviceEntry:
    rng = DeterministicRng(b"device" + seed + device_id.to_bytes(4, "big"))
    identity = DeviceIdentityKey.generate(rng)
    auth = DeviceAuthKey.generate(rng)
    return DeviceEntry(device_id, identity.public_key, auth.public_key)


ACCOUNT = AccountKey.generate(DeterministicRng(b"alice account"))
OTHER_ACCOUNT = AccountKey.generate(DeterministicRng(b"mallory account"))


def alice_list(*ids: int, version: int = 1) -> DeviceList:
    return DeviceList("alice", version, tuple(make_entry(i) for i in ids))


def body_with(
    *, version_byte: int = 1, username: str = "alice", list_version: int = 1, ids: list[int]
) -> bytes:
    w = Writer().u8(version_byte).str16(username).u64(list_version).u16(len(ids))
    for i in ids:
        entry = make_entry(i)
        w.u32(i).raw(entry.identity_key.to_bytes()).raw(entry.auth_key.to_bytes())
    return w.finish()


def signed(body: bytes, key: AccountKey = ACCOUNT) -> bytes:
    return body + key.sign(DEVICE_LIST_LABEL, body)


def test_signed_list_round_trips_and_verifies() -> None:
    device_list = alice_list(1, 5, 9)
    signed_list = device_list.sign(ACCOUNT)
    data = signed_list.to_bytes()
    assert len(data) == 1 + 2 + 5 + 8 + 2 + 3 * 70 + 64
    parsed = SignedDeviceList.from_bytes(data)
    assert parsed == signed_list
    assert parsed.to_bytes() == data
    assert parsed.verify(ACCOUNT.public_key, username="alice") == device_list
    assert DeviceList.from_bytes(parsed.body) == device_list


def test_body_layout_matches_the_contract_byte_for_byte() -> None:
    device_list = alice_list(3)
    entry = device_list.devices[0]
    expected = (
        b"\x01"
        + b"\x00\x05alice"
        + (1).to_bytes(8, "big")
        + b"\x00\x01"
        + (3).to_bytes(4, "big")
        + b"\x01"
        + entry.identity_key.raw
        + b"\x02"
        + entry.auth_key.raw
    )
    assert device_list.to_bytes() == expected
    signed_list = device_list.sign(ACCOUNT)
    assert signed_list.signature == ACCOUNT.sign(b"VoxDeviceList-v1", expected)


def test_another_accounts_signature_is_rejected() -> None:
    data = signed(body_with(ids=[1]), OTHER_ACCOUNT)
    with pytest.raises(BadSignature):
        SignedDeviceList.from_bytes(data).verify(ACCOUNT.public_key, username="alice")


def test_any_flipped_bit_fails_verification_or_decoding() -> None:
    data = alice_list(1, 2).sign(ACCOUNT).to_bytes()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises((BadSignature, DecodeError)):
            SignedDeviceList.from_bytes(bytes(flipped)).verify(ACCOUNT.public_key, username="alice")


def test_list_for_another_account_is_rejected() -> None:
    data = signed(body_with(username="bob", ids=[1]))
    with pytest.raises(DeviceListAccountMismatch) as info:
        SignedDeviceList.from_bytes(data).verify(ACCOUNT.public_key, username="alice")
    assert (info.value.expected, info.value.got) == ("alice", "bob")


def test_rollback_to_an_older_version_is_rejected() -> None:
    v1 = alice_list(1).sign(ACCOUNT)
    v2 = alice_list(1, 2, version=2).sign(ACCOUNT)
    v2.verify(ACCOUNT.public_key, username="alice", previous=v1)
    with pytest.raises(DeviceListRollback) as info:
        v1.verify(ACCOUNT.public_key, username="alice", previous=v2)
    assert (info.value.seen, info.value.got) == (2, 1)


def test_min_version_refuses_older_lists() -> None:
    v2 = alice_list(1, 2, version=2).sign(ACCOUNT)
    assert v2.verify(ACCOUNT.public_key, username="alice", min_version=2).version == 2
    with pytest.raises(DeviceListRollback) as info:
        v2.verify(ACCOUNT.public_key, username="alice", min_version=3)
    assert (info.value.seen, info.value.got) == (2, 2)


def test_same_version_is_accepted_only_when_byte_identical() -> None:
    v2 = alice_list(1, 2, version=2).sign(ACCOUNT)
    again = SignedDeviceList.from_bytes(v2.to_bytes())
    assert again.verify(ACCOUNT.public_key, username="alice", previous=v2) == v2.device_list
    equivocation = alice_list(1, 3, version=2).sign(ACCOUNT)
    with pytest.raises(DeviceListRollback):
        equivocation.verify(ACCOUNT.public_key, username="alice", previous=v2)


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        ([2, 1], InvalidValue),
        ([1, 1], InvalidValue),
        ([0], InvalidValue),
        ([], InvalidValue),
        (list(range(1, MAX_DEVICES + 2)), FieldTooLarge),
    ],
)
def test_malformed_device_sets_are_rejected(ids: list[int], error: type[DecodeError]) -> None:
    with pytest.raises(error):
        SignedDeviceList.from_bytes(signed(body_with(ids=ids)))


def test_sixteen_devices_are_allowed() -> None:
    data = signed(body_with(ids=list(range(1, MAX_DEVICES + 1))))
    parsed = SignedDeviceList.from_bytes(data)
    assert len(parsed.verify(ACCOUNT.public_key, username="alice").devices) == MAX_DEVICES


def test_malformed_framing_is_rejected() -> None:
    good = signed(body_with(ids=[1]))
    with pytest.raises(UnsupportedVersion):
        SignedDeviceList.from_bytes(signed(body_with(version_byte=2, ids=[1])))
    with pytest.raises(InvalidValue):
        SignedDeviceList.from_bytes(signed(body_with(list_version=0, ids=[1])))
    with pytest.raises(InvalidValue):
        SignedDeviceList.from_bytes(signed(body_with(username="Alice", ids=[1])))
    with pytest.raises(Truncated):
        SignedDeviceList.from_bytes(good[:-1])
    with pytest.raises(TrailingBytes):
        SignedDeviceList.from_bytes(good + b"\x00")
    wrong_prefix = bytearray(good)
    wrong_prefix[1 + 7 + 8 + 2 + 4] = 0x02  # identity key typed as Ed25519
    with pytest.raises(InvalidValue):
        SignedDeviceList.from_bytes(bytes(wrong_prefix))


def test_add_and_remove_bump_the_version_and_lookup_finds_devices() -> None:
    v1 = alice_list(4)
    v2 = v1.add_device(make_entry(2))
    assert (v2.version, v2.device_ids) == (2, (2, 4))
    v3 = v2.remove_device(4)
    assert (v3.version, v3.device_ids) == (3, (2,))
    assert v2.lookup(4) == make_entry(4)
    with pytest.raises(UnknownDevice) as info:
        v3.lookup(4)
    assert info.value.device_id == 4
    with pytest.raises(UnknownDevice):
        v3.remove_device(4)
    with pytest.raises(InvalidValue):
        v2.add_device(make_entry(2))
    with pytest.raises(InvalidValue):
        v3.remove_device(2)  # a list names at least one device


def test_check_device_refuses_a_ghost_identity_key() -> None:
    device_list = alice_list(1, 2)
    assert device_list.check_device(1, make_entry(1).identity_key).device_id == 1
    ghost = make_entry(1, seed=b"ghost")
    with pytest.raises(UnknownDevice):
        device_list.check_device(1, ghost.identity_key)
    with pytest.raises(UnknownDevice):
        device_list.check_device(3, make_entry(3).identity_key)


def test_repr_shows_no_signature_bytes() -> None:
    signed_list = alice_list(1).sign(ACCOUNT)
    assert signed_list.signature.hex() not in repr(signed_list)
    assert "alice" in repr(signed_list)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_decoder_raises_only_decode_error_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        SignedDeviceList.from_bytes(data)
    with contextlib.suppress(DecodeError):
        DeviceList.from_bytes(data)


@settings(max_examples=200)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=200))
def test_decoder_raises_only_decode_error_on_mutated_valid_lists(junk: bytes, cut: int) -> None:
    data = alice_list(1, 2).sign(ACCOUNT).to_bytes()
    mutated = data[:cut] + junk + data[cut + len(junk) :]
    with contextlib.suppress(DecodeError):
        SignedDeviceList.from_bytes(mutated)


def test_a_non_canonical_identity_key_is_rejected() -> None:
    body = bytearray(body_with(ids=[1]))
    key_at = 1 + 7 + 8 + 2 + 4 + 1
    body[key_at : key_at + 32] = (2**255 - 19).to_bytes(32, "little")
    with pytest.raises(InvalidValue):
        SignedDeviceList.from_bytes(signed(bytes(body)))

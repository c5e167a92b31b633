"""Weak Ed25519 public keys are refused wherever a key enters ``crypto/`` (issue 9, defect 3).

With the identity point as the public key, the signature ``R = identity, S = 0`` verifies
every message under every label (OpenSSL checks ``[S]B = R + [k]A`` without rejecting
small-order ``A``), so a member publishing such a sender-key signing key would let anyone
forge in its name. The refused keys are listed in ``tests/vectors/ed25519_weak_keys.json``
and re-derived here with independent point arithmetic; the Wycheproof Ed25519 keys (all
honest keys) must keep working at the same call sites.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crypto import primitives as p
from crypto.device_list import DeviceEntry, DeviceList, SignedDeviceList
from crypto.encoding import Writer
from crypto.envelope import decode_message
from crypto.errors import BadSignature, DecodeError, WeakPublicKey
from crypto.keys import (
    AccountKey,
    DeviceAddress,
    DeviceAuthKey,
    DeviceIdentityKey,
    Ed25519PublicKey,
    PrekeyBundle,
)
from crypto.pqxdh import initiate_session
from crypto.primitives import DeterministicRng
from crypto.sender_keys import SenderKeyDistribution, SenderKeyState
from tests.crypto.support import make_device

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
WEAK: list[dict[str, str]] = json.loads((VECTORS / "ed25519_weak_keys.json").read_text())["keys"]
WYCHEPROOF: Any = json.loads((VECTORS / "ed25519_test.json").read_text())
WEAK_IDS = [f"{w['reason']}:{w['key'][:8]}…{w['key'][-4:]}" for w in WEAK]
IDENTITY = (1).to_bytes(32, "little")
TRIVIAL_SIGNATURE = IDENTITY + bytes(32)  # R = identity, S = 0

# --- independent edwards25519 arithmetic (affine, a = -1), for checking the data file -------

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _decompress(encoding: bytes) -> tuple[int, int] | None:
    """The point of a canonical encoding, or None when it is not on the curve."""
    value = int.from_bytes(encoding, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    assert y < P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = pow(u * pow(v, -1, P) % P, (P + 3) // 8, P)
    if (x * x * v - u) % P:
        x = x * SQRT_M1 % P
    if (x * x * v - u) % P:
        return None
    if x & 1 != sign:
        x = (P - x) % P
    return x, y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def _times8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _add(point, point)
    return point


@pytest.mark.parametrize("weak", WEAK, ids=WEAK_IDS)
def test_the_weak_key_list_is_right(weak: dict[str, str]) -> None:
    raw = bytes.fromhex(weak["key"])
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if weak["reason"] == "non-canonical":
        assert y >= P
        return
    point = _decompress(raw)
    assert point is not None and _times8(point) == (0, 1)  # of order dividing 8


def test_the_list_covers_every_small_order_point() -> None:
    small = {bytes.fromhex(w["key"]) for w in WEAK if w["reason"] == "small-order"}
    points = {_decompress(k) for k in small if int.from_bytes(k, "little") >> 255 == 0}
    points |= {_decompress(k) for k in small if _decompress(k) is not None}
    assert len({pt for pt in points if pt is not None}) == 8  # the whole 8-torsion subgroup


# --- the demonstration: a forged signature under a weak key ---------------------------------


def test_the_identity_key_would_verify_a_trivial_signature_on_any_message() -> None:
    # What the fix closes: refused by Vox, not by the backend.
    from cryptography.hazmat.primitives.asymmetric import ed25519

    backend = ed25519.Ed25519PublicKey.from_public_bytes(IDENTITY)
    backend.verify(TRIVIAL_SIGNATURE, b"any message at all")  # no exception: a forgery
    with pytest.raises(BadSignature):
        p.ed25519_verify(IDENTITY, b"any message at all", TRIVIAL_SIGNATURE)


@pytest.mark.parametrize("weak", WEAK, ids=WEAK_IDS)
def test_verification_refuses_every_weak_key(weak: dict[str, str]) -> None:
    raw = bytes.fromhex(weak["key"])
    with pytest.raises(WeakPublicKey):
        p.ed25519_check_public(raw)
    with pytest.raises(BadSignature):
        p.ed25519_verify(raw, b"m", TRIVIAL_SIGNATURE)


# --- every call site --------------------------------------------------------------------------

RNG = DeterministicRng(b"weak-ed25519")
ACCOUNT = AccountKey.generate(RNG)
IDENTITY_KEY = DeviceIdentityKey.generate(RNG)
AUTH = DeviceAuthKey.generate(RNG)
GROUP = b"group-weak-keys"
SENDER = DeviceAddress("mallory", 3)


def _typed(raw: bytes) -> bytes:
    return b"\x02" + raw


def _bundle_with_account_key(typed_account: bytes) -> bytes:
    from crypto.keys import KemPrekey, SignedPrekey

    spk = SignedPrekey.generate(1, ACCOUNT, IDENTITY_KEY.public_key, RNG)
    kem = KemPrekey.generate(2, ACCOUNT, IDENTITY_KEY.public_key, last_resort=True, rng=RNG)
    honest = PrekeyBundle(
        DeviceAddress("bob", 1),
        ACCOUNT.public_key,
        IDENTITY_KEY.public_key,
        spk.to_public(),
        kem.to_public(),
    ).to_bytes()
    return honest.replace(ACCOUNT.public_key.to_bytes(), typed_account, 1)


def _device_list_with_auth_key(typed_auth: bytes) -> bytes:
    entry = DeviceEntry(1, IDENTITY_KEY.public_key, AUTH.public_key)
    signed = DeviceList("mallory", 1, (entry,)).sign(ACCOUNT).to_bytes()
    return signed.replace(AUTH.public_key.to_bytes(), typed_auth, 1)


def _distribution_with_signing_key(typed_signing: bytes) -> bytes:
    honest = SenderKeyState.create(GROUP, SENDER, rng=RNG).distribution()
    return honest.to_bytes()[: -len(typed_signing)] + typed_signing


def _initial_message_with_account_key(typed_account: bytes) -> bytes:
    rng = DeterministicRng(b"weak-initial")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    wire = initiate_session(alice.local, bob.bundle(), rng=rng).encrypt(b"hi", rng)
    return wire.replace(alice.account.public_key.to_bytes(), typed_account, 1)


CALL_SITES: dict[str, Callable[[bytes], object]] = {
    "typed key": lambda typed: Ed25519PublicKey.from_bytes(typed),
    "bundle account key": lambda typed: PrekeyBundle.from_bytes(_bundle_with_account_key(typed)),
    "device list auth key": lambda typed: SignedDeviceList.from_bytes(
        _device_list_with_auth_key(typed)
    ),
    "sender key signing key": lambda typed: SenderKeyDistribution.from_bytes(
        _distribution_with_signing_key(typed)
    ),
    "initial message account key": lambda typed: decode_message(
        _initial_message_with_account_key(typed)
    ),
}


@pytest.mark.parametrize("site", sorted(CALL_SITES))
@pytest.mark.parametrize("weak", WEAK, ids=WEAK_IDS)
def test_every_entry_point_refuses_a_weak_key(site: str, weak: dict[str, str]) -> None:
    with pytest.raises(WeakPublicKey) as caught:
        CALL_SITES[site](_typed(bytes.fromhex(weak["key"])))
    assert isinstance(caught.value, DecodeError)  # decoders still raise only DecodeError


@pytest.mark.parametrize("weak", WEAK, ids=WEAK_IDS)
def test_constructing_a_key_or_a_sender_key_state_refuses_a_weak_key(
    weak: dict[str, str],
) -> None:
    raw = bytes.fromhex(weak["key"])
    with pytest.raises(WeakPublicKey):
        Ed25519PublicKey(raw)
    with pytest.raises(WeakPublicKey):
        SenderKeyState(GROUP, SENDER, 1, 0, bytes(32), raw)


def test_a_member_cannot_be_forged_through_a_weak_sender_key() -> None:
    """The reviewer's demonstration, end to end: on the old code the forged message decrypted."""
    chain_key = bytes(range(32))
    forged = Writer().u8(1).bytes16(GROUP).str16(SENDER.username).u32(SENDER.device_id)
    distribution = forged.u32(7).u32(0).raw(chain_key).raw(_typed(IDENTITY)).finish()
    with pytest.raises(WeakPublicKey):
        SenderKeyDistribution.from_bytes(distribution)


@pytest.mark.parametrize("group", WYCHEPROOF["testGroups"], ids=lambda g: g["publicKey"]["pk"][:12])
def test_wycheproof_keys_are_accepted_at_every_call_site_and_verdicts_hold(group: Any) -> None:
    raw = bytes.fromhex(group["publicKey"]["pk"])
    typed = _typed(raw)
    for site, enter in CALL_SITES.items():
        if site != "initial message account key":  # (a pairwise key swap: checked once below)
            enter(typed)
    key = Ed25519PublicKey.from_bytes(typed)
    for test in group["tests"]:
        msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        if test["result"] == "valid":
            p.ed25519_verify(key.raw, msg, sig)
        else:
            with pytest.raises(BadSignature):
                p.ed25519_verify(key.raw, msg, sig)


def test_an_honest_key_still_enters_an_initial_message() -> None:
    other = AccountKey.generate(DeterministicRng(b"honest")).public_key.to_bytes()
    decode_message(_initial_message_with_account_key(other))

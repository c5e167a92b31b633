"""``wire.weak_keys``: every listed encoding really is a small-order point, and real keys pass."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wire.weak_keys import (
    ED25519_SMALL_ORDER_Y,
    X25519_LOW_ORDER_U,
    ed25519_weakness,
    x25519_weakness,
)

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P


def _decode(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 §5.1.3 point decoding, but accepting y >= p (to check the non-canonical forms)."""
    value = int.from_bytes(raw, "little")
    y, sign = (value & ((1 << 255) - 1)) % P, value >> 255
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return (0, y)  # "negative zero": a non-canonical encoding of the same point
    return (P - x if (x & 1) != sign else x), y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2
    return (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P, (y1 * y2 + x1 * x2) * pow(
        1 - t, P - 2, P
    ) % P


def _ed_encodings() -> list[bytes]:
    return [
        (y | sign << 255).to_bytes(32, "little") for y in ED25519_SMALL_ORDER_Y for sign in (0, 1)
    ]


@pytest.mark.parametrize("raw", _ed_encodings(), ids=lambda raw: raw.hex()[:8])
def test_every_listed_ed25519_encoding_is_refused_and_of_small_order(raw: bytes) -> None:
    assert ed25519_weakness(raw) is not None
    point = _decode(raw)
    if point is None:
        return  # not a point at all (y = 1 or p - 1 has no x with the other sign): refused anyway
    for _ in range(3):
        point = _add(point, point)
    assert point == (0, 1)  # 8·P is the identity


def test_the_ed25519_list_is_libsodiums() -> None:
    # Two entries of libsodium's ge25519_has_small_order blocklist, byte for byte.
    order8 = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
    order8_neg = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
    for hex_ in (order8, order8_neg):
        assert int.from_bytes(bytes.fromhex(hex_), "little") in ED25519_SMALL_ORDER_Y
    assert len(ED25519_SMALL_ORDER_Y) == 7


@pytest.mark.parametrize("u", sorted(X25519_LOW_ORDER_U), ids=lambda u: hex(u)[:10])
def test_every_listed_x25519_u_is_refused_and_gives_an_all_zero_secret(u: int) -> None:
    raw = u.to_bytes(32, "little")
    assert x25519_weakness(raw) is not None
    assert x25519_weakness((u | 1 << 255).to_bytes(32, "little")) is not None
    with pytest.raises(ValueError):  # OpenSSL refuses the all-zero output (RFC 7748 §6.1)
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))


def test_non_canonical_encodings_are_refused() -> None:
    for y in range(P, 2**255):  # the 19 values y >= p (two of them small-order)
        assert ed25519_weakness(y.to_bytes(32, "little")) is not None
    assert "non-canonical" in (ed25519_weakness((P + 5).to_bytes(32, "little")) or "")
    assert "non-canonical" in (x25519_weakness((P + 5).to_bytes(32, "little")) or "")
    key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert "non-canonical" in (x25519_weakness(key[:31] + bytes([key[31] | 0x80])) or "")


def test_real_keys_pass() -> None:
    for _ in range(50):
        assert (
            ed25519_weakness(Ed25519PrivateKey.generate().public_key().public_bytes_raw()) is None
        )
        assert x25519_weakness(X25519PrivateKey.generate().public_key().public_bytes_raw()) is None
    assert ed25519_weakness(os.urandom(31)) is not None
    assert x25519_weakness(os.urandom(33)) is not None

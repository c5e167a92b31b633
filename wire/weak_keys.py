"""Public-key encodings the relay refuses: small-order Curve25519 points, non-canonical forms.

Pure byte comparisons (no cryptography): the relay checks every X25519 and Ed25519 public
key it is given (registration, device lists, signed and one-time prekeys) against these
lists and answers ``400`` before storing it. A small-order key is a bug or an attack: an
X25519 agreement with it yields an all-zero (or guessable) secret, and any signature
"verifies" under a small-order Ed25519 key for a crafted R and S = 0.

Sources (the same points, written as the y- and u-coordinates the encodings hold):

* libsodium, ``crypto_core/ed25519/ref10/ed25519_ref10.c`` ``ge25519_has_small_order``
  (blocklist of the eight small-order Edwards points: y = 0, 1, p − 1 and the two order-8
  y-coordinates, plus the non-canonical p and p + 1; compared with the sign bit ignored), and
  ``crypto_scalarmult/curve25519/ref10/x25519_ref10.c`` ``has_small_order`` (u = 0, 1, the
  two order-8 u-coordinates, p − 1, p, p + 1);
* Project Wycheproof, ``testvectors/x25519_test.json`` ("public key with low order") and
  ``eddsa_test.json``; RFC 7748 §6.1 (check for an all-zero shared secret), RFC 8032 §5.1.3.

``tests/wire/test_weak_keys.py`` checks every entry: each Ed25519 encoding decodes to a point
that 8·P sends to the identity, each X25519 u gives an all-zero X25519 output.
"""

from __future__ import annotations

__all__ = [
    "ED25519_SMALL_ORDER_Y",
    "X25519_LOW_ORDER_U",
    "ed25519_weakness",
    "x25519_weakness",
]

_P = 2**255 - 19

#: y-coordinates of the eight small-order Edwards25519 points (identity, order 2, the two of
#: order 4 share y = 0, the four of order 8 share ±y8), and p, p + 1 (non-canonical 0 and 1).
ED25519_SMALL_ORDER_Y: frozenset[int] = frozenset(
    {
        0,  # order 4 (x = ±sqrt(-1))
        1,  # order 1: the identity
        _P - 1,  # order 2
        2707385501144840649318225287225658788936804267575313519463743609750303402022,  # order 8
        55188659117513257062467267217118295137698188065244968500265048394206261417927,  # order 8
        _P,  # non-canonical 0
        _P + 1,  # non-canonical 1
    }
)

#: u-coordinates of the low-order points of Curve25519 and its twist (X25519 output 0).
X25519_LOW_ORDER_U: frozenset[int] = frozenset(
    {
        0,  # order 2
        1,  # order 4
        325606250916557431795983626356110631294008115727848805560023387167927233504,  # order 8
        39382357235489614581723060781553021112529911719440698176882885853963445705823,  # order 8
        _P - 1,  # order 2 on the twist
        _P,  # non-canonical 0
        _P + 1,  # non-canonical 1
    }
)


def ed25519_weakness(raw: bytes) -> str | None:
    """Why the 32-byte Ed25519 public key ``raw`` must be refused, or None.

    Refused: the encoding of a small-order point (either sign bit, so also the "negative
    zero" forms of the identity and of the order-2 point) and any non-canonical y (y ≥ p).
    """
    if len(raw) != 32:
        return "an Ed25519 public key is 32 bytes"
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)  # the top bit is x's sign
    if y in ED25519_SMALL_ORDER_Y:
        return "a small-order Ed25519 point"
    if y >= _P:
        return "a non-canonical Ed25519 encoding (y >= 2^255 - 19)"
    return None


def x25519_weakness(raw: bytes) -> str | None:
    """Why the 32-byte X25519 public key ``raw`` must be refused, or None.

    Refused: a low-order u-coordinate (with or without the unused top bit set) and any
    non-canonical encoding (top bit set, or u ≥ p).
    """
    if len(raw) != 32:
        return "an X25519 public key is 32 bytes"
    u = int.from_bytes(raw, "little")
    if u & ((1 << 255) - 1) in X25519_LOW_ORDER_U:
        return "a low-order X25519 point"
    if u >= _P:
        return "a non-canonical X25519 encoding (u >= 2^255 - 19)"
    return None

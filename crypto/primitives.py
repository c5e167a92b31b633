"""The one boundary between Vox and ``cryptography``.

Every primitive the protocol core uses is wrapped here, with raw ``bytes`` in and out,
fixed sizes checked up front, and ``cryptography``'s exceptions translated into the
project's error tree (:mod:`crypto.errors`). No other module imports ``cryptography``.

Randomness is always a parameter: an :data:`Rng` is any ``Callable[[int], bytes]`` that
returns exactly ``n`` random bytes. The default is :func:`os.urandom`; tests and vector
generation pass a :class:`DeterministicRng` instead of patching anything.

Private keys are raw byte strings here:

* X25519: the 32-byte scalar as given to ``X25519PrivateKey.from_private_bytes``
  (clamping happens inside X25519, RFC 7748 §5).
* Ed25519: the 32-byte seed of RFC 8032 §5.1.5.
* ML-KEM-768: the 64-byte seed ``d || z`` of FIPS 203 (``ML-KEM.KeyGen_internal``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import (
    AuthenticationFailed,
    BadSignature,
    InvalidPublicKey,
    InvalidValue,
    WeakPublicKey,
)

__all__ = [
    "AES_KEY_LEN",
    "AES_NONCE_LEN",
    "AES_TAG_LEN",
    "ED25519_KEY_LEN",
    "ED25519_SIGNATURE_LEN",
    "MLKEM768_CIPHERTEXT_LEN",
    "MLKEM768_PUBLIC_LEN",
    "MLKEM768_SEED_LEN",
    "MLKEM768_SHARED_LEN",
    "SHA256_LEN",
    "X25519_KEY_LEN",
    "DeterministicRng",
    "Ed25519Signer",
    "Ed25519Verifier",
    "MlKem768DecapsulationKey",
    "Rng",
    "X25519KeyPair",
    "aes256gcm_decrypt",
    "aes256gcm_encrypt",
    "ed25519_check_public",
    "ed25519_generate",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_sha256",
    "hmac_sha256_pair",
    "mlkem768_decapsulate",
    "mlkem768_encapsulate",
    "mlkem768_generate",
    "mlkem768_public",
    "random_bytes",
    "random_nonce",
    "sha256",
    "signing_message",
    "x25519_exchange",
    "x25519_generate",
    "x25519_public",
]

Rng = Callable[[int], bytes]
"""A source of randomness: ``rng(n)`` returns exactly ``n`` bytes."""

X25519_KEY_LEN: Final = 32
ED25519_KEY_LEN: Final = 32
ED25519_SIGNATURE_LEN: Final = 64
MLKEM768_SEED_LEN: Final = 64
MLKEM768_PUBLIC_LEN: Final = 1184
MLKEM768_CIPHERTEXT_LEN: Final = 1088
MLKEM768_SHARED_LEN: Final = 32
AES_KEY_LEN: Final = 32
AES_NONCE_LEN: Final = 12
AES_TAG_LEN: Final = 16
SHA256_LEN: Final = 32
_HKDF_MAX: Final = 255 * SHA256_LEN
_ZERO32: Final = bytes(32)
_P25519: Final = 2**255 - 19
_Y_MASK: Final = (1 << 255) - 1
# The y-coordinates of the eight points of order dividing 8 on edwards25519: the identity
# (y = 1), the point of order 2 (y = -1), the two of order 4 (y = 0) and the four of order 8
# (y = ±Y8). Any encoding with one of these y values (either sign bit) is a small-order key.
_Y8: Final = 0x5FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826
_SMALL_ORDER_Y: Final = frozenset({0, 1, _P25519 - 1, _Y8, _P25519 - _Y8})


def _need(field: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise InvalidValue(field, f"must be {size} bytes, got {len(data)}")


def _random(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if len(out) != n:
        raise ValueError(f"rng returned {len(out)} bytes instead of {n}")
    return bytes(out)


class DeterministicRng:
    """A reproducible byte stream for tests and vector generation. Never use it for keys.

    The stream is ``SHA-256(seed || u64be(0)) || SHA-256(seed || u64be(1)) || ...``,
    consumed front to back across calls (documented in ``docs/protocol-crypto.md``
    because the pinned vectors depend on it). :attr:`drawn` lists every output in order
    (the vector generators publish it as the "RNG draws" of each vector).
    """

    __slots__ = ("_buffer", "_counter", "_seed", "drawn")

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self._counter = 0
        self._buffer = b""
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.sha256(self._seed + struct.pack(">Q", self._counter)).digest()
            self._buffer += block
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.drawn.append(out)
        return out

    def __repr__(self) -> str:
        return f"DeterministicRng(counter={self._counter})"


def random_bytes(n: int) -> bytes:
    """The default :data:`Rng`: ``n`` bytes from the operating system (:func:`os.urandom`)."""
    return os.urandom(n)


def random_nonce(rng: Rng = random_bytes) -> bytes:
    """A fresh 96-bit AES-GCM nonce: exactly 12 bytes drawn from ``rng``."""
    if rng is random_bytes:  # the default: os.urandom returns exactly n bytes
        return os.urandom(AES_NONCE_LEN)
    return _random(rng, AES_NONCE_LEN)


def signing_message(label: bytes, data: bytes) -> bytes:
    """Return the domain-separated message every Vox signature covers: ``label || 0x00 || data``.

    ``label`` is an ASCII context label without NUL bytes (for example ``b"VoxDeviceList-v1"``).
    """
    if b"\x00" in label or not label.isascii():
        raise ValueError("a signing label is ASCII without NUL bytes")
    return label + b"\x00" + data


# --- X25519 ---------------------------------------------------------------------------


def x25519_generate(rng: Rng = random_bytes) -> bytes:
    """Return a fresh 32-byte X25519 private scalar drawn from ``rng``."""
    return _random(rng, X25519_KEY_LEN)


def x25519_public(private: bytes) -> bytes:
    """Return the 32-byte public u-coordinate of an X25519 private scalar."""
    _need("x25519 private key", private, X25519_KEY_LEN)
    key = x25519.X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes_raw()


def x25519_exchange(private: bytes, peer_public: bytes) -> bytes:
    """Return X25519(private, peer_public).

    Raises :class:`InvalidPublicKey` for a malformed peer key, a low-order peer key
    (``cryptography`` raises ``ValueError``) and, defensively, an all-zero result.
    """
    _need("x25519 private key", private, X25519_KEY_LEN)
    return _exchange(x25519.X25519PrivateKey.from_private_bytes(private), peer_public)


def _exchange(key: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    if len(peer_public) != X25519_KEY_LEN:
        raise InvalidPublicKey(f"X25519 public key must be 32 bytes, got {len(peer_public)}")
    try:
        shared = key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise InvalidPublicKey("X25519 exchange failed (low-order point)") from exc
    if hmac.compare_digest(shared, _ZERO32):
        raise InvalidPublicKey("X25519 shared secret is all zero")
    return shared


class X25519KeyPair:
    """An X25519 private scalar with its public key, loaded into ``cryptography`` once.

    Loading a private key costs one scalar multiplication (OpenSSL derives the public
    key), so long-lived holders (ratchet keys, identity keys) keep one of these instead of
    calling :func:`x25519_exchange` with raw bytes every time.
    """

    __slots__ = ("_key", "private", "public")

    def __init__(self, private: bytes) -> None:
        _need("x25519 private key", private, X25519_KEY_LEN)
        self._key = x25519.X25519PrivateKey.from_private_bytes(private)
        self.private = bytes(private)
        self.public = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, rng: Rng = random_bytes) -> X25519KeyPair:
        """A fresh key pair from 32 bytes of ``rng``."""
        return cls(x25519_generate(rng))

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 with a peer key, with the checks of :func:`x25519_exchange`."""
        return _exchange(self._key, peer_public)

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public[:8].hex()}…)"


# --- Ed25519 --------------------------------------------------------------------------


def ed25519_generate(rng: Rng = random_bytes) -> bytes:
    """Return a fresh 32-byte Ed25519 seed drawn from ``rng``."""
    return _random(rng, ED25519_KEY_LEN)


def ed25519_public(private: bytes) -> bytes:
    """Return the 32-byte Ed25519 public key of a seed."""
    _need("ed25519 private key", private, ED25519_KEY_LEN)
    return ed25519.Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def ed25519_sign(private: bytes, message: bytes) -> bytes:
    """Return the 64-byte deterministic Ed25519 signature (RFC 8032) of ``message``."""
    _need("ed25519 private key", private, ED25519_KEY_LEN)
    return ed25519.Ed25519PrivateKey.from_private_bytes(private).sign(message)


def ed25519_check_public(public: bytes, field: str = "Ed25519 public key") -> None:
    """Refuse a weak Ed25519 public key: raise :class:`WeakPublicKey` (a ``DecodeError``).

    Refused: a length other than 32 bytes, a **non-canonical** encoding (the 255-bit
    y-coordinate is ``>= 2^255 - 19``), and a **small-order** point (the identity, the point
    of order 2, the two of order 4 and the four of order 8, with either sign bit). A string
    that is canonical but not on the curve is not checked here (it costs an exponentiation);
    no signature ever verifies under it (:class:`BadSignature`).
    """
    if len(public) != ED25519_KEY_LEN:
        raise WeakPublicKey(field, f"must be {ED25519_KEY_LEN} bytes, got {len(public)}")
    y = int.from_bytes(public, "little") & _Y_MASK
    if y >= _P25519:
        raise WeakPublicKey(field, "non-canonical encoding (y >= 2^255 - 19)")
    if y in _SMALL_ORDER_Y:
        raise WeakPublicKey(field, "small-order point")


def ed25519_verify(public: bytes, message: bytes, signature: bytes, what: str = "message") -> None:
    """Verify an Ed25519 signature; raise :class:`BadSignature` (naming ``what``) if it fails.

    A public key that is not a valid 32-byte encoding, or that is weak
    (:func:`ed25519_check_public`), also raises :class:`BadSignature`.
    """
    if len(public) != ED25519_KEY_LEN or len(signature) != ED25519_SIGNATURE_LEN:
        raise BadSignature(what)
    try:
        ed25519_check_public(public)
    except WeakPublicKey as exc:
        raise BadSignature(what) from exc
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature(what) from exc


class Ed25519Signer:
    """An Ed25519 seed loaded into ``cryptography`` once (loading derives the public key: a
    scalar multiplication), for holders that sign repeatedly (a sender key)."""

    __slots__ = ("_key", "public")

    def __init__(self, private: bytes) -> None:
        _need("ed25519 private key", private, ED25519_KEY_LEN)
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(private)
        self.public = self._key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte deterministic signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Ed25519Signer(public={self.public[:8].hex()}…)"


class Ed25519Verifier:
    """An Ed25519 public key checked (:func:`ed25519_check_public`) and loaded once, for holders
    that verify repeatedly (a receiving sender key)."""

    __slots__ = ("_key", "public")

    def __init__(self, public: bytes) -> None:
        ed25519_check_public(public)
        self.public = bytes(public)
        try:
            self._key: ed25519.Ed25519PublicKey | None = ed25519.Ed25519PublicKey.from_public_bytes(
                public
            )
        except ValueError:  # not a curve point: nothing will ever verify under it
            self._key = None

    def verify(self, message: bytes, signature: bytes, what: str = "message") -> None:
        """Like :func:`ed25519_verify` with this key."""
        if self._key is None or len(signature) != ED25519_SIGNATURE_LEN:
            raise BadSignature(what)
        try:
            self._key.verify(signature, message)
        except InvalidSignature as exc:
            raise BadSignature(what) from exc

    def __repr__(self) -> str:
        return f"Ed25519Verifier({self.public[:8].hex()}…)"


# --- hashes ---------------------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    """Return the 32-byte SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


# --- HKDF / HMAC ----------------------------------------------------------------------


# HMAC-SHA256 under a 32-byte key (every chain, message and AEAD key derivation of the
# ratchet and of sender keys) is computed from its definition (RFC 2104) with two one-shot
# SHA-256 calls: OpenSSL 3's one-shot HMAC (``hmac.digest``) looks the MAC up again on every
# call and costs about twice as much. The key is XORed with the pads as one integer (no
# table indexed by key bytes). Other key sizes, and long messages, take OpenSSL's HMAC.
try:
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover (an interpreter without OpenSSL's one-shot HMAC)
    _hmac_digest = hmac.digest  # type: ignore[assignment]

_sha256 = hashlib.sha256
_IPAD: Final = int.from_bytes(b"\x36" * SHA256_LEN, "big")
_OPAD: Final = int.from_bytes(b"\x5c" * SHA256_LEN, "big")
# The second half of a 32-byte key padded to SHA-256's 64-byte block, XORed with each pad.
_IPAD_TAIL: Final = b"\x36" * SHA256_LEN
_OPAD_TAIL: Final = b"\x5c" * SHA256_LEN
_SHORT_MESSAGE: Final = 256


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """``(K ^ ipad, K ^ opad)`` of a 32-byte key (zero-padded to the 64-byte block)."""
    k = int.from_bytes(key, "big")
    return (
        (k ^ _IPAD).to_bytes(SHA256_LEN, "big") + _IPAD_TAIL,
        (k ^ _OPAD).to_bytes(SHA256_LEN, "big") + _OPAD_TAIL,
    )


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """Return the 32-byte HMAC-SHA256 of ``data`` under ``key`` (RFC 2104)."""
    if len(key) == SHA256_LEN and len(data) <= _SHORT_MESSAGE:
        inner, outer = _pads(key)
        return _sha256(outer + _sha256(inner + data).digest()).digest()
    return _hmac_digest(key, data, "sha256")


def hmac_sha256_pair(key: bytes, first: bytes, second: bytes) -> tuple[bytes, bytes]:
    """``(HMAC-SHA256(key, first), HMAC-SHA256(key, second))`` for a 32-byte key and short
    messages (a chain step: the message key and the next chain key), the pads computed once."""
    if len(key) != SHA256_LEN or len(first) > _SHORT_MESSAGE or len(second) > _SHORT_MESSAGE:
        return hmac_sha256(key, first), hmac_sha256(key, second)
    inner, outer = _pads(key)
    sha = _sha256
    return (
        sha(outer + sha(inner + first).digest()).digest(),
        sha(outer + sha(inner + second).digest()).digest(),
    )


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """Return ``length`` bytes of HKDF-SHA256 (RFC 5869); an empty salt means 32 zero bytes.

    Raises ``ValueError`` for ``length`` outside ``1 ..= 8160``.
    """
    if not 0 < length <= _HKDF_MAX:
        raise ValueError(f"HKDF-SHA256 output length must be 1..{_HKDF_MAX}, got {length}")
    prk = hmac_sha256(salt or _ZERO32, ikm)
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


# --- AES-256-GCM ----------------------------------------------------------------------


def aes256gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Return ``ciphertext || 16-byte tag``. Only 32-byte keys and 96-bit nonces."""
    if len(key) != AES_KEY_LEN or len(nonce) != AES_NONCE_LEN:
        _need("aes key", key, AES_KEY_LEN)
        _need("aes nonce", nonce, AES_NONCE_LEN)
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt ``ciphertext || tag``; raise :class:`AuthenticationFailed` if the tag fails."""
    if len(key) != AES_KEY_LEN or len(nonce) != AES_NONCE_LEN:
        _need("aes key", key, AES_KEY_LEN)
        _need("aes nonce", nonce, AES_NONCE_LEN)
    if len(ciphertext) < AES_TAG_LEN:
        raise AuthenticationFailed("ciphertext shorter than the GCM tag")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise AuthenticationFailed("AES-256-GCM tag does not verify") from exc


# --- ML-KEM-768 -----------------------------------------------------------------------


def mlkem768_generate(rng: Rng = random_bytes) -> bytes:
    """Return a fresh 64-byte ML-KEM-768 seed (``d || z``) drawn from ``rng``."""
    return _random(rng, MLKEM768_SEED_LEN)


def mlkem768_public(seed: bytes) -> bytes:
    """Return the 1184-byte encapsulation key of a 64-byte ML-KEM-768 seed."""
    _need("ml-kem-768 seed", seed, MLKEM768_SEED_LEN)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def mlkem768_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to an encapsulation key: return ``(ciphertext (1088), shared secret (32))``.

    The encapsulation randomness comes from OpenSSL; ``cryptography`` does not accept
    caller randomness here. A key of the wrong size or with unreduced coefficients
    (FIPS 203 §7.2 modulus check) raises :class:`InvalidPublicKey`.
    """
    if len(public) != MLKEM768_PUBLIC_LEN:
        raise InvalidPublicKey(f"ML-KEM-768 key must be {MLKEM768_PUBLIC_LEN} bytes")
    try:
        shared, ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(public).encapsulate()
    except ValueError as exc:
        raise InvalidPublicKey("ML-KEM-768 encapsulation key is not valid") from exc
    return ciphertext, shared


class MlKem768DecapsulationKey:
    """An ML-KEM-768 seed expanded once (FIPS 203 key generation costs more than a
    decapsulation), for holders that decapsulate or publish repeatedly (a KEM prekey)."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        _need("ml-kem-768 seed", seed, MLKEM768_SEED_LEN)
        self._key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        self.public = self._key.public_key().public_bytes_raw()

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Like :func:`mlkem768_decapsulate` with this key."""
        _need("ml-kem-768 ciphertext", ciphertext, MLKEM768_CIPHERTEXT_LEN)
        return self._key.decapsulate(ciphertext)

    def __repr__(self) -> str:
        return "MlKem768DecapsulationKey(…)"


def mlkem768_decapsulate(seed: bytes, ciphertext: bytes) -> bytes:
    """Return the 32-byte shared secret for ``ciphertext`` (FIPS 203 implicit rejection).

    A ciphertext of the wrong size raises :class:`InvalidValue`; a well-sized but forged
    ciphertext yields an unrelated secret, which the following AEAD step rejects.
    """
    _need("ml-kem-768 seed", seed, MLKEM768_SEED_LEN)
    _need("ml-kem-768 ciphertext", ciphertext, MLKEM768_CIPHERTEXT_LEN)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(ciphertext)

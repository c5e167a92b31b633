"""Keys, identities and prekey bundles.

Public keys are frozen, slotted values with a **type-prefixed** encoding:

==============  ======  ==============================
type            prefix  encoding
==============  ======  ==============================
X25519          0x01    ``0x01 || 32 bytes``  (33)
Ed25519         0x02    ``0x02 || 32 bytes``  (33)
ML-KEM-768      0x03    ``0x03 || 1184 bytes`` (1185)
==============  ======  ==============================

Private key holders never show key bytes in ``repr()``. Each serializes for the
client's (encrypted) store as ``u8 version (1) || u8 kind || fields``.

Prekey signatures are made with the **account** key over a domain-separated message
(:func:`crypto.primitives.signing_message`) that binds the device's identity key::

    signed prekey: label b"VoxSignedPrekey-v1",
                   data  = typed identity key (33) || u32 key_id || typed X25519 prekey (33)
    KEM prekey:    label b"VoxKemPrekey-v1",
                   data  = typed identity key (33) || u32 key_id || u8 last_resort
                           || typed ML-KEM-768 prekey (1185)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

from crypto import primitives as p
from crypto.encoding import Reader, Writer
from crypto.errors import InvalidValue

__all__ = [
    "ACCOUNT_KEY_KIND",
    "KEM_PREKEY_LABEL",
    "MAX_DEVICE_ID",
    "SIGNED_PREKEY_LABEL",
    "AccountKey",
    "AccountPublicKey",
    "DeviceAddress",
    "DeviceAuthKey",
    "DeviceIdentityKey",
    "Ed25519PublicKey",
    "KemPrekey",
    "KemPrekeyPublic",
    "MlKem768PublicKey",
    "OneTimePrekey",
    "OneTimePrekeyPublic",
    "PeerDevice",
    "PrekeyBundle",
    "SignedPrekey",
    "SignedPrekeyPublic",
    "X25519PublicKey",
    "validate_username",
]

SIGNED_PREKEY_LABEL: Final = b"VoxSignedPrekey-v1"
KEM_PREKEY_LABEL: Final = b"VoxKemPrekey-v1"
MAX_DEVICE_ID: Final = 0xFFFFFFFF
_P25519: Final = 2**255 - 19
_USERNAME = re.compile(r"[a-z0-9_.-]{3,32}")
_PRIVATE_VERSION: Final = 1
ACCOUNT_KEY_KIND: Final = 0x11
_IDENTITY_KIND: Final = 0x12
_AUTH_KIND: Final = 0x13
_SIGNED_PREKEY_KIND: Final = 0x14
_KEM_PREKEY_KIND: Final = 0x15
_ONE_TIME_KIND: Final = 0x16


def validate_username(username: str) -> str:
    """Return ``username`` if it matches ``^[a-z0-9_.-]{3,32}$``, else raise ``InvalidValue``."""
    if not _USERNAME.fullmatch(username):
        raise InvalidValue("username", "must match ^[a-z0-9_.-]{3,32}$")
    return username


def _check_device_id(device_id: int) -> int:
    if not 1 <= device_id <= MAX_DEVICE_ID:
        raise InvalidValue("device_id", "must be a u32 >= 1")
    return device_id


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """One device of one account: ``username`` + ``device_id`` (u32, >= 1)."""

    username: str
    device_id: int

    def __post_init__(self) -> None:
        validate_username(self.username)
        _check_device_id(self.device_id)

    def write(self, w: Writer) -> Writer:
        """Append ``str16 username || u32 device_id``."""
        return w.str16(self.username).u32(self.device_id)

    @classmethod
    def read(cls, r: Reader) -> DeviceAddress:
        """Read ``str16 username || u32 device_id``."""
        return cls(r.str16("username", 32), r.u32())

    def __str__(self) -> str:
        return f"{self.username}:{self.device_id}"


# --- public keys ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TypedPublicKey:
    raw: bytes
    PREFIX: ClassVar[int] = 0
    SIZE: ClassVar[int] = 0
    NAME: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if len(self.raw) != self.SIZE:
            raise InvalidValue(self.NAME, f"must be {self.SIZE} bytes, got {len(self.raw)}")

    def to_bytes(self) -> bytes:
        """Return ``prefix || raw``."""
        return bytes((self.PREFIX,)) + self.raw

    def write(self, w: Writer) -> Writer:
        """Append the typed encoding."""
        return w.raw(self.to_bytes())

    @classmethod
    def read(cls, r: Reader) -> Self:
        """Read a typed encoding from ``r``."""
        prefix = r.u8()
        if prefix != cls.PREFIX:
            raise InvalidValue(cls.NAME, f"type prefix {prefix:#04x}, expected {cls.PREFIX:#04x}")
        return cls(r.raw(cls.SIZE))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly one typed encoding (no trailing bytes)."""
        r = Reader(data)
        key = cls.read(r)
        r.end()
        return key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw[:8].hex()}…)"


@dataclass(frozen=True, slots=True, repr=False)
class X25519PublicKey(_TypedPublicKey):
    """An X25519 public key; encoded ``0x01 || 32 bytes`` (canonical u-coordinate only)."""

    PREFIX: ClassVar[int] = 0x01
    SIZE: ClassVar[int] = p.X25519_KEY_LEN
    NAME: ClassVar[str] = "X25519 public key"

    def __post_init__(self) -> None:
        _TypedPublicKey.__post_init__(self)
        # Only canonical u-coordinates (< 2^255 - 19, top bit clear) travel in Vox: X25519
        # would silently reduce the others, making a flipped top bit go unnoticed.
        if int.from_bytes(self.raw, "little") >= _P25519:
            raise InvalidValue(self.NAME, "non-canonical u-coordinate")


@dataclass(frozen=True, slots=True, repr=False)
class Ed25519PublicKey(_TypedPublicKey):
    """An Ed25519 public key; encoded ``0x02 || 32 bytes``.

    Weak keys are refused on construction and decoding with
    :class:`~crypto.errors.WeakPublicKey`: non-canonical encodings and small-order points
    (:func:`crypto.primitives.ed25519_check_public`).
    """

    PREFIX: ClassVar[int] = 0x02
    SIZE: ClassVar[int] = p.ED25519_KEY_LEN
    NAME: ClassVar[str] = "Ed25519 public key"

    def __post_init__(self) -> None:
        _TypedPublicKey.__post_init__(self)
        p.ed25519_check_public(self.raw, self.NAME)

    def verify(self, label: bytes, data: bytes, signature: bytes, what: str) -> None:
        """Verify ``signature`` over ``label || 0x00 || data``; raise ``BadSignature(what)``."""
        p.ed25519_verify(self.raw, p.signing_message(label, data), signature, what)


@dataclass(frozen=True, slots=True, repr=False)
class MlKem768PublicKey(_TypedPublicKey):
    """An ML-KEM-768 encapsulation key; encoded ``0x03 || 1184 bytes``."""

    PREFIX: ClassVar[int] = 0x03
    SIZE: ClassVar[int] = p.MLKEM768_PUBLIC_LEN
    NAME: ClassVar[str] = "ML-KEM-768 public key"


AccountPublicKey = Ed25519PublicKey
"""The public half of an :class:`AccountKey` (an alias of :class:`Ed25519PublicKey`)."""


# --- private keys ---------------------------------------------------------------------


def _check_len(name: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise InvalidValue(name, f"must be {size} bytes, got {len(data)}")


def _private_reader(data: bytes, kind: int, name: str) -> Reader:
    r = Reader(data)
    r.version(_PRIVATE_VERSION)
    got = r.u8()
    if got != kind:
        raise InvalidValue(name, f"kind byte {got:#04x}, expected {kind:#04x}")
    return r


def _private_writer(kind: int) -> Writer:
    return Writer().u8(_PRIVATE_VERSION).u8(kind)


@dataclass(frozen=True, slots=True)
class _Ed25519SigningKey:
    """An Ed25519 private key (its 32-byte seed) with Vox's labelled signatures."""

    KIND: ClassVar[int] = 0
    NAME: ClassVar[str] = ""

    private: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.private) != p.ED25519_KEY_LEN:
            raise InvalidValue(self.NAME, "must be 32 bytes")

    @classmethod
    def generate(cls, rng: p.Rng = p.random_bytes) -> Self:
        """Create a fresh key."""
        return cls(p.ed25519_generate(rng))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public verification key."""
        return Ed25519PublicKey(p.ed25519_public(self.private))

    def sign(self, label: bytes, data: bytes) -> bytes:
        """Sign ``label || 0x00 || data`` (64-byte Ed25519)."""
        return p.ed25519_sign(self.private, p.signing_message(label, data))

    def to_bytes(self) -> bytes:
        """Serialize: ``01 || KIND || seed (32)``."""
        return _private_writer(self.KIND).raw(self.private).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        r = _private_reader(data, cls.KIND, cls.NAME)
        key = cls(r.raw(p.ED25519_KEY_LEN))
        r.end()
        return key


@dataclass(frozen=True, slots=True)
class AccountKey(_Ed25519SigningKey):
    """The account's Ed25519 signing key (shared by the user's devices); encoded
    ``01 || 11 || seed``."""

    KIND: ClassVar[int] = ACCOUNT_KEY_KIND
    NAME: ClassVar[str] = "account key"


@dataclass(frozen=True, slots=True)
class DeviceAuthKey(_Ed25519SigningKey):
    """A device's Ed25519 key, used only to sign relay authentication challenges (it is
    registered with the relay and listed in the device list); encoded ``01 || 13 || seed``."""

    KIND: ClassVar[int] = _AUTH_KIND
    NAME: ClassVar[str] = "device auth key"


@dataclass(frozen=True, slots=True)
class DeviceIdentityKey:
    """A device's long-term X25519 identity key (PQXDH ``IK``)."""

    private: bytes = field(repr=False)
    public_key: X25519PublicKey = field(init=False, repr=False, compare=False)
    _pair: p.X25519KeyPair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.private) != p.X25519_KEY_LEN:
            raise InvalidValue("device identity key", "must be 32 bytes")
        pair = p.X25519KeyPair(self.private)
        object.__setattr__(self, "_pair", pair)
        object.__setattr__(self, "public_key", X25519PublicKey(pair.public))

    @classmethod
    def generate(cls, rng: p.Rng = p.random_bytes) -> DeviceIdentityKey:
        """Create a fresh identity key."""
        return cls(p.x25519_generate(rng))

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """X25519 with a peer key; raises ``InvalidPublicKey`` on a bad peer key."""
        return self._pair.exchange(peer.raw)

    def to_bytes(self) -> bytes:
        """Serialize: ``01 || 12 || scalar (32)``."""
        return _private_writer(_IDENTITY_KIND).raw(self.private).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceIdentityKey:
        """Inverse of :meth:`to_bytes`."""
        r = _private_reader(data, _IDENTITY_KIND, "device identity key")
        key = cls(r.raw(p.X25519_KEY_LEN))
        r.end()
        return key

    def __repr__(self) -> str:
        return f"DeviceIdentityKey(public={self.public_key!r})"


def _signed_prekey_data(identity: X25519PublicKey, key_id: int, key: X25519PublicKey) -> bytes:
    return Writer().raw(identity.to_bytes()).u32(key_id).raw(key.to_bytes()).finish()


def _kem_prekey_data(
    identity: X25519PublicKey, key_id: int, last_resort: bool, key: MlKem768PublicKey
) -> bytes:
    w = Writer().raw(identity.to_bytes()).u32(key_id).u8(int(last_resort))
    return w.raw(key.to_bytes()).finish()


# --- prekeys: public halves (what the relay serves) -----------------------------------


@dataclass(frozen=True, slots=True)
class SignedPrekeyPublic:
    """``u32 key_id || typed X25519 key (33) || signature (64)`` — 101 bytes."""

    key_id: int
    public_key: X25519PublicKey
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_len("signed prekey signature", self.signature, p.ED25519_SIGNATURE_LEN)

    def verify(self, account: Ed25519PublicKey, identity: X25519PublicKey) -> None:
        """Check the account signature; raise ``BadSignature("signed prekey")``."""
        data = _signed_prekey_data(identity, self.key_id, self.public_key)
        account.verify(SIGNED_PREKEY_LABEL, data, self.signature, "signed prekey")

    def write(self, w: Writer) -> Writer:
        """Append the encoding."""
        return w.u32(self.key_id).raw(self.public_key.to_bytes()).raw(self.signature)

    @classmethod
    def read(cls, r: Reader) -> SignedPrekeyPublic:
        """Read the encoding."""
        return cls(r.u32(), X25519PublicKey.read(r), r.raw(p.ED25519_SIGNATURE_LEN))

    def to_bytes(self) -> bytes:
        """Encode (101 bytes)."""
        return self.write(Writer()).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPrekeyPublic:
        """Decode exactly one encoding."""
        r = Reader(data)
        out = cls.read(r)
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class KemPrekeyPublic:
    """``u32 key_id || u8 last_resort || typed ML-KEM-768 key (1185) || signature (64)``."""

    key_id: int
    public_key: MlKem768PublicKey
    last_resort: bool
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_len("KEM prekey signature", self.signature, p.ED25519_SIGNATURE_LEN)

    def verify(self, account: Ed25519PublicKey, identity: X25519PublicKey) -> None:
        """Check the account signature; raise ``BadSignature("KEM prekey")``."""
        data = _kem_prekey_data(identity, self.key_id, self.last_resort, self.public_key)
        account.verify(KEM_PREKEY_LABEL, data, self.signature, "KEM prekey")

    def write(self, w: Writer) -> Writer:
        """Append the encoding."""
        w.u32(self.key_id).u8(int(self.last_resort))
        return w.raw(self.public_key.to_bytes()).raw(self.signature)

    @classmethod
    def read(cls, r: Reader) -> KemPrekeyPublic:
        """Read the encoding."""
        key_id = r.u32()
        last_resort = r.flag("last_resort")
        key = MlKem768PublicKey.read(r)
        return cls(key_id, key, last_resort, r.raw(p.ED25519_SIGNATURE_LEN))

    def to_bytes(self) -> bytes:
        """Encode (1254 bytes)."""
        return self.write(Writer()).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> KemPrekeyPublic:
        """Decode exactly one encoding."""
        r = Reader(data)
        out = cls.read(r)
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class OneTimePrekeyPublic:
    """``u32 key_id || typed X25519 key (33)`` — 37 bytes (unsigned, as in Signal)."""

    key_id: int
    public_key: X25519PublicKey

    def write(self, w: Writer) -> Writer:
        """Append the encoding."""
        return w.u32(self.key_id).raw(self.public_key.to_bytes())

    @classmethod
    def read(cls, r: Reader) -> OneTimePrekeyPublic:
        """Read the encoding."""
        return cls(r.u32(), X25519PublicKey.read(r))

    def to_bytes(self) -> bytes:
        """Encode (37 bytes)."""
        return self.write(Writer()).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> OneTimePrekeyPublic:
        """Decode exactly one encoding."""
        r = Reader(data)
        out = cls.read(r)
        r.end()
        return out


# --- prekeys: private holders (kept by the device) ------------------------------------


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """A device's medium-term X25519 signed prekey (PQXDH ``SPK``), signed by the account."""

    key_id: int
    private: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    _pair: p.X25519KeyPair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_len("signed prekey", self.private, p.X25519_KEY_LEN)
        _check_len("signed prekey signature", self.signature, p.ED25519_SIGNATURE_LEN)
        object.__setattr__(self, "_pair", p.X25519KeyPair(self.private))

    @property
    def public_key(self) -> X25519PublicKey:
        """The public prekey."""
        return X25519PublicKey(self._pair.public)

    @property
    def key_pair(self) -> p.X25519KeyPair:
        """The loaded key pair (the responder's first ratchet key)."""
        return self._pair

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """X25519 with a peer key; raises ``InvalidPublicKey`` on a bad peer key."""
        return self._pair.exchange(peer.raw)

    @classmethod
    def generate(
        cls,
        key_id: int,
        account: AccountKey,
        identity: X25519PublicKey,
        rng: p.Rng = p.random_bytes,
    ) -> SignedPrekey:
        """Create and sign a prekey for the device whose identity key is ``identity``."""
        private = p.x25519_generate(rng)
        public = X25519PublicKey(p.x25519_public(private))
        signature = account.sign(SIGNED_PREKEY_LABEL, _signed_prekey_data(identity, key_id, public))
        return cls(key_id, private, signature)

    def to_public(self) -> SignedPrekeyPublic:
        """The part published in the bundle."""
        return SignedPrekeyPublic(self.key_id, self.public_key, self.signature)

    def to_bytes(self) -> bytes:
        """Serialize: ``01 || 14 || u32 key_id || scalar (32) || signature (64)``."""
        w = _private_writer(_SIGNED_PREKEY_KIND).u32(self.key_id)
        return w.raw(self.private).raw(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPrekey:
        """Inverse of :meth:`to_bytes`."""
        r = _private_reader(data, _SIGNED_PREKEY_KIND, "signed prekey")
        out = cls(r.u32(), r.raw(p.X25519_KEY_LEN), r.raw(p.ED25519_SIGNATURE_LEN))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class KemPrekey:
    """An ML-KEM-768 prekey (PQXDH ``PQPK``): a one-time one or the last-resort one.

    The expanded key is computed on first use and kept (expanding the seed costs more than a
    decapsulation), so keep the object rather than re-reading it from bytes per message.
    """

    key_id: int
    seed: bytes = field(repr=False)
    last_resort: bool
    signature: bytes = field(repr=False)
    _loaded: p.MlKem768DecapsulationKey | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_len("KEM prekey seed", self.seed, p.MLKEM768_SEED_LEN)
        _check_len("KEM prekey signature", self.signature, p.ED25519_SIGNATURE_LEN)

    def _key(self) -> p.MlKem768DecapsulationKey:
        loaded = self._loaded
        if loaded is None:
            loaded = p.MlKem768DecapsulationKey(self.seed)
            object.__setattr__(self, "_loaded", loaded)
        return loaded

    @property
    def public_key(self) -> MlKem768PublicKey:
        """The public encapsulation key."""
        return MlKem768PublicKey(self._key().public)

    @classmethod
    def generate(
        cls,
        key_id: int,
        account: AccountKey,
        identity: X25519PublicKey,
        *,
        last_resort: bool,
        rng: p.Rng = p.random_bytes,
    ) -> KemPrekey:
        """Create and sign a KEM prekey for the device whose identity key is ``identity``."""
        seed = p.mlkem768_generate(rng)
        loaded = p.MlKem768DecapsulationKey(seed)
        data = _kem_prekey_data(identity, key_id, last_resort, MlKem768PublicKey(loaded.public))
        prekey = cls(key_id, seed, last_resort, account.sign(KEM_PREKEY_LABEL, data))
        object.__setattr__(prekey, "_loaded", loaded)
        return prekey

    def to_public(self) -> KemPrekeyPublic:
        """The part published in the bundle."""
        return KemPrekeyPublic(self.key_id, self.public_key, self.last_resort, self.signature)

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Return the 32-byte ML-KEM shared secret of ``ciphertext``."""
        return self._key().decapsulate(ciphertext)

    def to_bytes(self) -> bytes:
        """Serialize: ``01 || 15 || u32 key_id || u8 last_resort || seed (64) || sig (64)``."""
        w = _private_writer(_KEM_PREKEY_KIND).u32(self.key_id).u8(int(self.last_resort))
        return w.raw(self.seed).raw(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> KemPrekey:
        """Inverse of :meth:`to_bytes`."""
        r = _private_reader(data, _KEM_PREKEY_KIND, "KEM prekey")
        key_id = r.u32()
        last_resort = r.flag("last_resort")
        out = cls(key_id, r.raw(p.MLKEM768_SEED_LEN), last_resort, r.raw(p.ED25519_SIGNATURE_LEN))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """A one-time X25519 prekey (PQXDH ``OPK``); deleted once an initial message used it."""

    key_id: int
    private: bytes = field(repr=False)
    _pair: p.X25519KeyPair | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_len("one-time prekey", self.private, p.X25519_KEY_LEN)

    def _key(self) -> p.X25519KeyPair:
        pair = self._pair
        if pair is None:
            pair = p.X25519KeyPair(self.private)
            object.__setattr__(self, "_pair", pair)
        return pair

    @property
    def public_key(self) -> X25519PublicKey:
        """The public prekey."""
        return X25519PublicKey(self._key().public)

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """X25519 with a peer key; raises ``InvalidPublicKey`` on a bad peer key."""
        return self._key().exchange(peer.raw)

    @classmethod
    def generate(cls, key_id: int, rng: p.Rng = p.random_bytes) -> OneTimePrekey:
        """Create a fresh one-time prekey."""
        return cls(key_id, p.x25519_generate(rng))

    def to_public(self) -> OneTimePrekeyPublic:
        """The part published in the bundle."""
        return OneTimePrekeyPublic(self.key_id, self.public_key)

    def to_bytes(self) -> bytes:
        """Serialize: ``01 || 16 || u32 key_id || scalar (32)``."""
        return _private_writer(_ONE_TIME_KIND).u32(self.key_id).raw(self.private).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> OneTimePrekey:
        """Inverse of :meth:`to_bytes`."""
        r = _private_reader(data, _ONE_TIME_KIND, "one-time prekey")
        out = cls(r.u32(), r.raw(p.X25519_KEY_LEN))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class PeerDevice:
    """The public identity of a remote device: address, account key and identity key.

    Encoding: ``str16 username || u32 device_id || typed Ed25519 account key (33)
    || typed X25519 identity key (33)``.
    """

    address: DeviceAddress
    account_key: Ed25519PublicKey
    identity_key: X25519PublicKey

    def write(self, w: Writer) -> Writer:
        """Append the encoding."""
        self.address.write(w).raw(self.account_key.to_bytes())
        return w.raw(self.identity_key.to_bytes())

    @classmethod
    def read(cls, r: Reader) -> PeerDevice:
        """Read the encoding."""
        return cls(DeviceAddress.read(r), Ed25519PublicKey.read(r), X25519PublicKey.read(r))


# --- bundle ---------------------------------------------------------------------------

_BUNDLE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """Everything an initiator needs to start a session with one device.

    Encoding::

        u8 version (1) || str16 username || u32 device_id
        || typed Ed25519 account key (33) || typed X25519 identity key (33)
        || signed prekey (101) || KEM prekey (1254)
        || u8 has_one_time || [one-time prekey (37)]
    """

    address: DeviceAddress
    account_key: Ed25519PublicKey
    identity_key: X25519PublicKey
    signed_prekey: SignedPrekeyPublic
    kem_prekey: KemPrekeyPublic
    one_time_prekey: OneTimePrekeyPublic | None = None

    def verify(self) -> None:
        """Verify every signature in the bundle with its account key (``BadSignature``)."""
        self.signed_prekey.verify(self.account_key, self.identity_key)
        self.kem_prekey.verify(self.account_key, self.identity_key)

    def to_bytes(self) -> bytes:
        """Encode the bundle."""
        w = self.address.write(Writer().u8(_BUNDLE_VERSION))
        w.raw(self.account_key.to_bytes()).raw(self.identity_key.to_bytes())
        self.kem_prekey.write(self.signed_prekey.write(w))
        w.u8(int(self.one_time_prekey is not None))
        if self.one_time_prekey is not None:
            self.one_time_prekey.write(w)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyBundle:
        """Decode a bundle (signatures are *not* checked here; call :meth:`verify`)."""
        r = Reader(data)
        r.version(_BUNDLE_VERSION)
        address = DeviceAddress.read(r)
        account = Ed25519PublicKey.read(r)
        identity = X25519PublicKey.read(r)
        signed = SignedPrekeyPublic.read(r)
        kem = KemPrekeyPublic.read(r)
        one_time = OneTimePrekeyPublic.read(r) if r.flag("has_one_time_prekey") else None
        r.end()
        return cls(address, account, identity, signed, kem, one_time)

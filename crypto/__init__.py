"""Vox protocol core: keys, PQXDH, the Double Ratchet and envelopes (sans-I/O, synchronous).

Bytes and values in, bytes and values out; randomness is an ``rng`` parameter. The wire
and state formats are specified byte for byte in ``docs/protocol-crypto.md``.

Alice starts a session with Bob's device from its prekey bundle; Bob accepts it:

>>> from crypto import *
>>> bob_account = AccountKey.generate()
>>> bob = LocalDevice(DeviceAddress("bob", 1), bob_account.public_key,
...                   DeviceIdentityKey.generate())
>>> spk = SignedPrekey.generate(1, bob_account, bob.identity_key.public_key)
>>> kem = KemPrekey.generate(1, bob_account, bob.identity_key.public_key, last_resort=True)
>>> otk = OneTimePrekey.generate(7)
>>> bundle = PrekeyBundle(bob.address, bob_account.public_key, bob.identity_key.public_key,
...                       spk.to_public(), kem.to_public(), otk.to_public())
>>> wire_bundle = bundle.to_bytes()          # what the relay serves to Alice
>>> alice_account = AccountKey.generate()
>>> alice = LocalDevice(DeviceAddress("alice", 1), alice_account.public_key,
...                     DeviceIdentityKey.generate())
>>> alice_session = initiate_session(alice, PrekeyBundle.from_bytes(wire_bundle))
>>> first = alice_session.encrypt(b"hi Bob")  # an initial (PQXDH) message
>>> accepted = accept_session(bob, PrekeySecrets({1: spk}, {1: kem}, {7: otk}), first)
>>> accepted.body, accepted.consumed
(b'hi Bob', ConsumedPrekeys(one_time_prekey_id=7, kem_prekey_id=None))
>>> bob_session = accepted.session
>>> alice_session.decrypt(bob_session.encrypt(b"hi Alice"))
b'hi Alice'
>>> alice_session.awaiting_reply
False
>>> restored = Session.from_bytes(bob_session.to_bytes())   # state round-trips exactly
>>> restored.decrypt(alice_session.encrypt(b"still here"))
b'still here'
>>> tampered = bytearray(alice_session.encrypt(b"x")); tampered[-1] ^= 1
>>> before = restored.to_bytes()
>>> restored.decrypt(bytes(tampered))
Traceback (most recent call last):
...
crypto.errors.AuthenticationFailed: AES-256-GCM tag does not verify
>>> restored.to_bytes() == before          # a failed decrypt changes nothing
True
"""

from __future__ import annotations

from crypto.envelope import (
    InitialMessage,
    Payload,
    PqxdhPrefix,
    RatchetMessage,
    decode_message,
)
from crypto.errors import (
    AuthenticationFailed,
    BadSignature,
    DecodeError,
    DecryptionError,
    DeviceListError,
    DeviceListRollback,
    DuplicateMessage,
    FieldTooLarge,
    InvalidPublicKey,
    InvalidValue,
    KeyAgreementError,
    SenderMismatch,
    StateError,
    TooManySkipped,
    TrailingBytes,
    Truncated,
    UnknownDevice,
    UnknownPrekey,
    UnsupportedVersion,
    VoxError,
    WeakPublicKey,
)
from crypto.keys import (
    AccountKey,
    AccountPublicKey,
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
from crypto.pqxdh import (
    AcceptedSession,
    ConsumedPrekeys,
    LocalDevice,
    PrekeySecrets,
    accept_session,
    initiate_session,
)
from crypto.primitives import DeterministicRng, Rng, random_bytes
from crypto.ratchet.header import Header
from crypto.ratchet.session import RatchetConfig, Session

# --- devices, groups and attachments (device_list, sender_keys, fingerprint, attachments) ---
# Specified in docs/protocol-crypto-devices-groups-attachments.md; their names are the marked
# block of ``__all__`` below.
# isort: split
from crypto.attachments import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    decrypt_stream,
    encrypt_stream,
    padded_size,
)
from crypto.device_list import DeviceEntry, DeviceList, SignedDeviceList
from crypto.errors import AttachmentMismatch, DeviceListAccountMismatch, UnknownSenderKey
from crypto.fingerprint import (
    SafetyNumber,
    ScannableFingerprint,
    safety_number,
    safety_numbers_equal,
)
from crypto.sender_keys import (
    SenderKeyDistribution,
    SenderKeyMessage,
    SenderKeyRecord,
    SenderKeyState,
)

# --- end of the devices, groups and attachments imports ----------------------------------

__all__ = [  # noqa: RUF022 (devices, groups and attachments are a separate marked block)
    "AcceptedSession",
    "AccountKey",
    "AccountPublicKey",
    "AuthenticationFailed",
    "BadSignature",
    "ConsumedPrekeys",
    "DecodeError",
    "DecryptionError",
    "DeterministicRng",
    "DeviceAddress",
    "DeviceAuthKey",
    "DeviceIdentityKey",
    "DeviceListError",
    "DeviceListRollback",
    "DuplicateMessage",
    "Ed25519PublicKey",
    "FieldTooLarge",
    "Header",
    "InitialMessage",
    "InvalidPublicKey",
    "InvalidValue",
    "KemPrekey",
    "KemPrekeyPublic",
    "KeyAgreementError",
    "LocalDevice",
    "MlKem768PublicKey",
    "OneTimePrekey",
    "OneTimePrekeyPublic",
    "Payload",
    "PeerDevice",
    "PqxdhPrefix",
    "PrekeyBundle",
    "PrekeySecrets",
    "RatchetConfig",
    "RatchetMessage",
    "Rng",
    "SenderMismatch",
    "Session",
    "SignedPrekey",
    "SignedPrekeyPublic",
    "StateError",
    "TooManySkipped",
    "TrailingBytes",
    "Truncated",
    "UnknownDevice",
    "UnknownPrekey",
    "UnsupportedVersion",
    "VoxError",
    "WeakPublicKey",
    "X25519PublicKey",
    "accept_session",
    "decode_message",
    "initiate_session",
    "random_bytes",
    "validate_username",
    # --- devices, groups and attachments (device_list, sender_keys, fingerprint, attachments) ---
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "AttachmentMismatch",
    "AttachmentPointer",
    "DeviceEntry",
    "DeviceList",
    "DeviceListAccountMismatch",
    "SafetyNumber",
    "ScannableFingerprint",
    "SenderKeyDistribution",
    "SenderKeyMessage",
    "SenderKeyRecord",
    "SenderKeyState",
    "SignedDeviceList",
    "UnknownSenderKey",
    "decrypt_stream",
    "encrypt_stream",
    "padded_size",
    "safety_number",
    "safety_numbers_equal",
    # --- end of the devices, groups and attachments names ---
]

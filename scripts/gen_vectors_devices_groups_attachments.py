#!/usr/bin/env python3
"""Generate the vectors of the devices, groups and attachments chapter (signed device list,
sender keys, safety number, attachment, padded attachment, padding buckets) from fixed seeds,
into ``docs/vectors/protocol-crypto-devices-groups-attachments.json``.

Every random byte comes from :class:`crypto.primitives.DeterministicRng` with the seeds below;
Ed25519 signatures are deterministic (RFC 8032), so the output is fully reproducible.
``docs/protocol-crypto-devices-groups-attachments.md`` pins the same values;
``tests/crypto/test_devices_groups_attachments_vectors.py``
regenerates them and compares byte for byte.

Usage: ``.venv/bin/python scripts/gen_vectors_devices_groups_attachments.py [--check]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crypto import primitives  # noqa: E402
from crypto.attachments import (  # noqa: E402
    AttachmentEncryptor,
    ciphertext_size,
    encrypt_stream,
    padded_size,
)
from crypto.device_list import DeviceEntry, DeviceList  # noqa: E402
from crypto.fingerprint import safety_number  # noqa: E402
from crypto.keys import AccountKey, DeviceAddress, DeviceAuthKey, DeviceIdentityKey  # noqa: E402
from crypto.primitives import DeterministicRng  # noqa: E402
from crypto.sender_keys import HKDF_INFO, HKDF_INFO_V1, SenderKeyState  # noqa: E402

OUTPUT = ROOT / "docs" / "vectors" / "protocol-crypto-devices-groups-attachments.json"


def _draws(rng: DeterministicRng, labels: list[str]) -> list[dict[str, Any]]:
    """The rng's outputs in order, each with what it became (sizes must match the labels)."""
    assert len(rng.drawn) == len(labels), (len(rng.drawn), labels)
    return [
        {"what": w, "bytes": len(d), "value": d.hex()}
        for w, d in zip(labels, rng.drawn, strict=True)
    ]


def device_list_vectors() -> dict[str, Any]:
    """Two consecutive signed device lists of account ``alice``."""
    rng = DeterministicRng(b"vox-vectors-v1/device list")
    account = AccountKey.generate(rng)
    entries = []
    devices = []
    for device_id in (1, 7):
        identity = DeviceIdentityKey.generate(rng)
        auth = DeviceAuthKey.generate(rng)
        entries.append(DeviceEntry(device_id, identity.public_key, auth.public_key))
        devices.append(
            {
                "device_id": device_id,
                "identity_key": identity.public_key.to_bytes().hex(),
                "auth_key": auth.public_key.to_bytes().hex(),
            }
        )
    v1 = DeviceList.first("alice", entries[0]).sign(account)
    v2 = v1.device_list.add_device(entries[1]).sign(account)
    return {
        "seed": "vox-vectors-v1/device list",
        "rng_draws": _draws(
            rng,
            [
                "account key seed",
                "device 1 identity scalar",
                "device 1 auth key seed",
                "device 7 identity scalar",
                "device 7 auth key seed",
            ],
        ),
        "account_private_seed": account.private.hex(),
        "account_public_key": account.public_key.to_bytes().hex(),
        "username": "alice",
        "devices": devices,
        "v1": {"version": 1, "device_ids": [1], "signed": v1.to_bytes().hex()},
        "v2": {
            "version": 2,
            "device_ids": [1, 7],
            "body": v2.body.hex(),
            "signature": v2.signature.hex(),
            "signed": v2.to_bytes().hex(),
        },
    }


def sender_key_vectors() -> dict[str, Any]:
    """A sending state, its distribution and its first two messages."""
    rng = DeterministicRng(b"vox-vectors-v1/sender key")
    group_id = b"vox-group-vector"
    state = SenderKeyState.create(group_id, DeviceAddress("alice", 1), rng=rng)
    distribution = state.distribution()
    chain_key = distribution.chain_key
    seed = primitives.hmac_sha256(chain_key, b"\x01")
    okm = primitives.hkdf_sha256(seed, b"", HKDF_INFO_V1, 44)
    state_bytes = state.to_bytes()
    v2_state = SenderKeyState.from_bytes(state_bytes)
    messages = []
    messages_v2 = []
    for text in (b"hello group", b"second message"):
        v1 = state._seal(text, rng, 1)  # version 1 draws no randomness
        messages.append({"plaintext": text.hex(), "message": v1.to_bytes().hex()})
        v2 = v2_state.encrypt(text, rng)  # draws the 12-byte nonce
        messages_v2.append(
            {"plaintext": text.hex(), "nonce": v2.nonce.hex(), "message": v2.to_bytes().hex()}
        )
    return {
        "seed": "vox-vectors-v1/sender key",
        "rng_draws": _draws(
            rng,
            [
                "key_id (u32, big-endian)",
                "chain key",
                "signing key seed",
                "nonce of version-2 message 0",
                "nonce of version-2 message 1",
            ],
        ),
        "group_id": group_id.hex(),
        "sender": {"username": "alice", "device_id": 1},
        "key_id": distribution.key_id,
        "chain_key": chain_key.hex(),
        "signing_public_key": distribution.signing_public.to_bytes().hex(),
        "sending_state": state_bytes.hex(),
        "distribution": distribution.to_bytes().hex(),
        "iteration0": {
            "message_key_seed": seed.hex(),
            "aes_key": okm[:32].hex(),
            "nonce": okm[32:].hex(),
            "next_chain_key": primitives.hmac_sha256(chain_key, b"\x02").hex(),
            "aes_key_v2": primitives.hmac_sha256(seed, HKDF_INFO + b"\x01").hex(),
        },
        "messages": messages,
        "messages_v2": messages_v2,
    }


def safety_number_vectors() -> dict[str, Any]:
    """The safety number between ``alice`` and ``bob``."""
    alice = AccountKey.generate(DeterministicRng(b"vox-vectors-v1/safety alice")).public_key
    bob = AccountKey.generate(DeterministicRng(b"vox-vectors-v1/safety bob")).public_key
    at_alice = safety_number("alice", alice, "bob", bob)
    at_bob = safety_number("bob", bob, "alice", alice)
    assert at_alice.digits == at_bob.digits
    return {
        "alice_public_key": alice.to_bytes().hex(),
        "bob_public_key": bob.to_bytes().hex(),
        "digits": at_alice.digits,
        "display": at_alice.display(),
        "alice_fingerprint": at_alice.scannable.local.hex(),
        "bob_fingerprint": at_alice.scannable.remote.hex(),
        "scannable_at_alice": at_alice.scannable.to_string(),
        "scannable_at_bob": at_bob.scannable.to_string(),
    }


def attachment_vectors() -> dict[str, Any]:
    """A 112-byte attachment in 64-byte chunks (one full chunk, one final chunk)."""
    plaintext = b"Vox attachment test vector. " * 4
    rng = DeterministicRng(b"vox-vectors-v1/attachment")
    encryptor = AttachmentEncryptor(chunk_size=64, rng=rng)
    blob = b"".join(encrypt_stream([plaintext], encryptor))
    pointer = encryptor.pointer(
        content_type="text/plain", file_name="vector.txt", blob_id="blob-0001"
    )
    return {
        "seed": "vox-vectors-v1/attachment",
        "rng_draws": _draws(rng, ["attachment key"]),
        "chunk_size": 64,
        "plaintext": plaintext.hex(),
        "key": encryptor.key.hex(),
        "header": blob[:5].hex(),
        "chunk0": {"nonce": "0000000000000000" + "00000000", "ciphertext": blob[5:85].hex()},
        "chunk1_final": {"nonce": "0000000000000001" + "00000001", "ciphertext": blob[85:].hex()},
        "blob": blob.hex(),
        "digest": pointer.digest.hex(),
        "pointer": pointer.to_bytes().hex(),
    }


def padded_attachment_vectors() -> dict[str, Any]:
    """A 315-byte file padded to 541 bytes in 256-byte chunks: chunk 0 is file only, chunk 1
    holds the file's last 59 bytes and 197 zero bytes, the final chunk 2 holds 29 zero bytes.
    The pointer is version 2 (it carries the padding)."""
    plaintext = b"Vox padded attachment test vector. " * 9
    rng = DeterministicRng(b"vox-vectors-v1/padded attachment")
    encryptor = AttachmentEncryptor(chunk_size=256, rng=rng)
    blob = b"".join(encrypt_stream([plaintext], encryptor, padded=True))
    pointer = encryptor.pointer(
        content_type="text/plain", file_name="padded.txt", blob_id="blob-0002"
    )
    assert pointer.padded_size == padded_size(len(plaintext)) == 541
    assert len(blob) == pointer.ciphertext_size
    return {
        "seed": "vox-vectors-v1/padded attachment",
        "rng_draws": _draws(rng, ["attachment key"]),
        "chunk_size": 256,
        "size": len(plaintext),
        "padding": pointer.padding,
        "padded_size": pointer.padded_size,
        "plaintext": plaintext.hex(),
        "key": encryptor.key.hex(),
        "header": blob[:5].hex(),
        "chunk_nonces": [
            "0000000000000000" + "00000000",
            "0000000000000001" + "00000000",
            "0000000000000002" + "00000001",
        ],
        "blob_size": len(blob),
        "blob": blob.hex(),
        "digest": pointer.digest.hex(),
        "pointer": pointer.to_bytes().hex(),
    }


PADDING_SIZES = (0, 1, 541, 542, 1_000, 1_010, 65_536, 10_485_760, 104_857_600, 2**32, 2**62)


def padding_vectors() -> dict[str, Any]:
    """``padded_size`` (Signal's buckets, exact integer rule) and the resulting blob sizes with
    the default 64 KiB chunks."""
    return {
        "buckets": [
            {
                "size": size,
                "padded_size": padded_size(size),
                "blob_size": ciphertext_size(padded_size(size)),
            }
            for size in PADDING_SIZES
        ]
    }


def generate() -> dict[str, Any]:
    """All vectors, as written to the JSON file."""
    return {
        "comment": "Generated by scripts/gen_vectors_devices_groups_attachments.py; pinned in "
        "docs/protocol-crypto-devices-groups-attachments.md. All byte strings are lower-case hex.",
        "device_list": device_list_vectors(),
        "sender_key": sender_key_vectors(),
        "safety_number": safety_number_vectors(),
        "attachment": attachment_vectors(),
        "padded_attachment": padded_attachment_vectors(),
        "padding": padding_vectors(),
    }


def render() -> str:
    """The exact file content."""
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write the vectors, or with ``--check`` compare them with the committed file."""
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

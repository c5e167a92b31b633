"""Generate the project's own protocol vectors into ``docs/vectors/protocol-crypto.json``.

Everything is derived from fixed seeds through :class:`crypto.primitives.DeterministicRng`
(``SHA-256(seed || u64be(counter))`` blocks), so running this script again gives the
same bytes; ``tests/crypto/test_protocol_vectors.py`` regenerates and compares byte for
byte, and ``docs/protocol-crypto.md`` pins the values.

The file is a JSON object with one key per *section*. Each section is produced by a
function registered in :data:`SECTIONS`; to add vectors, write a function returning a
JSON-able dict and register it under a new name (the vectors of device lists, sender keys,
safety numbers and attachments live in their own generator,
``scripts/gen_vectors_devices_groups_attachments.py``).

One input cannot come from a seed: ``cryptography`` draws ML-KEM encapsulation randomness
itself. The PQXDH section therefore uses a pinned ML-KEM-768 ciphertext (made once by a
real encapsulation to Bob's fixed KEM prekey) and checks that Bob's key decapsulates it.
If Bob's fixed keys ever change, run ``--repin-kem`` and paste the printed constant.

Usage: ``python scripts/gen_vectors.py [--check] [--repin-kem]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crypto import primitives as p  # noqa: E402
from crypto.envelope import InitialMessage, decode_message  # noqa: E402
from crypto.keys import (  # noqa: E402
    AccountKey,
    DeviceAddress,
    DeviceIdentityKey,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from crypto.pqxdh import (  # noqa: E402
    LocalDevice,
    PrekeySecrets,
    accept_session,
    initiate_session_with_encapsulation,
    shared_secret,
)

OUTPUT = ROOT / "docs" / "vectors" / "protocol-crypto.json"
#: The fixed nonce of the ``ratchet_kdf`` section's version-2 example.
V2_NONCE = bytes(range(0x40, 0x4C))
ALICE_SEED = b"vox-vectors-v1/alice"
BOB_SEED = b"vox-vectors-v1/bob"

PINNED_KEM_CIPHERTEXT = bytes.fromhex(
    "7113909418a2ccfd8d95daef8691b3a5764f0695121a8324514ed88b26b3b655f4ed74d379bd985052fdc1a5"
    "b1581c9cabb31bd497e7d063a2393715f5d8c1cb7c67573068f338f2864479dd0adfd289ced2b1fc2625390c"
    "e2170b9dc1d59ce9331052fbc6f74d7c46d6c84c547743f92b811e723890f6408c51b6198eb92787c8fb5012"
    "c33462b9e270be0e3535e8524c1ee1d5fec18aec13822ba0d61862da37df5773f53108f6eb6af8e1c60d8316"
    "ab6e4162585f9405498a3bba4cc3ae898100fcc812cd6ae8981b2625ee743c959b15c92c5ede926b32bf00b0"
    "3736db21107e378936f4b4d217c3f606179f0c1172e1dfd0132ef4fa4bd69f0116ff9663cc2631f617698316"
    "9a8d48c6b31faefbfe058142fa8b51931f96bb461cda98fe0525018bbfe66da4fd6a590ac144d58dd260ad12"
    "0727bdfe6e4a1393b2670c6cf77cb9e37bea2c6d5d083d21f343caa34b1b2c31bfa889ca1aa8d59bd2983dbe"
    "214189a607d8e15f3fbc628afb125b68b643a023295a6eaec4ffaca46e90d323b757546865e217181d6a8606"
    "8cbcea85e99b952d867a4c2d5a3ae43dff695fda09a45210fbef15feb39a401f2777df4b3593d28a41e9d7ad"
    "41a4d82385d1476d0ffdf6dd188f24327f1a50958836b9bf405e4e9690f5baa59cab1b655ad0e9f8a9ad53e4"
    "f726eff8c306d3d4b66713577a4afd84868903f6a048d598de8359df0a9c3be5f8d2843109c6569e143a7310"
    "cea4055e9c379b2eb13c9807c3d226a15ab7fd00b7a0576e7776d307630d81565e3649ebdd1afa7883d05d2a"
    "5e257e7675705e7accf5bd607ef5c939c0b1ecd4dc68a602dbd40a208d47f1186def3b37e502e39369b132ef"
    "5d668783ccc27bd38e57f58e6606979585b8786a3426bece9169ae8e18209c07e371334f4cd6ddad838bb8f8"
    "25704f513f80fbe653d1f65432d43bdb06ba7cfe7b46a575efa09e401dca98a79955602e1b473c0670f80bbf"
    "84d66adb4a289e8f14811b97c6a2b06a489ae72feec3c3235b6c17770e0c0bd6718a5c3ac01efd59ded1ff67"
    "be62002c72251bccec2782ee62e6807c0f82b9cbb7390881b76927a58af11e4218b45aa4fbfa3c1b5881f171"
    "e5ccd1dff556cbf7490d4c8d4466b194a49e4cf88126b624317aca2e41cdee7770ec7e4da9f92ee0ece21b63"
    "2585f9a5168ac9b20e5d92be266abf196f57494377533bc938f090a9bd66b62396eca239cdbae3647ac3a8ec"
    "78a2136826c9988e4adb6eaa6ae027bbc99725a95e3c9c6f1529123584d6ea4b3e56329609b0d073f88ebf87"
    "f5227d015a90aaa8018c0afd5f1d7f90610bc453fbab108cd3900ae4bdcb6e4cea08e0186db0a34c676899ec"
    "7a443308e96fba835a5e86159038b1103c4d2669bde1ed8b15f583068e5806a841c1ca13f372cb1abb5fb03c"
    "80d1b7ac1bbde12f87dccfde8e8ba3fa4009c85c44fa8a74f07bb43270c76a3fe9aec6ded0ad45153dd07cd3"
    "abdceb16569f2fd45248816444e211b4d78a41085e7fc4db4ceb716b47c792f0"
)


def _bob_keys(
    rng: p.Rng,
) -> tuple[AccountKey, DeviceIdentityKey, SignedPrekey, KemPrekey, OneTimePrekey]:
    """Bob's keys, drawn in this order: account, identity, signed prekey 1, KEM prekey 2
    (one-time), one-time prekey 3."""
    account = AccountKey.generate(rng)
    identity = DeviceIdentityKey.generate(rng)
    spk = SignedPrekey.generate(1, account, identity.public_key, rng)
    kem = KemPrekey.generate(2, account, identity.public_key, last_resort=False, rng=rng)
    return account, identity, spk, kem, OneTimePrekey.generate(3, rng)


def _conversation(version: int) -> tuple[dict[str, Any], list[Any]]:
    """Alice and Bob's keys, the session setup and six messages in envelope ``version``."""
    rng_a, rng_b = p.DeterministicRng(ALICE_SEED), p.DeterministicRng(BOB_SEED)
    b_account, b_identity, spk, kem, otk = _bob_keys(rng_b)
    a_account = AccountKey.generate(rng_a)
    a_identity = DeviceIdentityKey.generate(rng_a)
    alice = LocalDevice(DeviceAddress("alice", 1), a_account.public_key, a_identity)
    bob = LocalDevice(DeviceAddress("bob", 7), b_account.public_key, b_identity)
    bundle = PrekeyBundle(
        bob.address,
        b_account.public_key,
        b_identity.public_key,
        spk.to_public(),
        kem.to_public(),
        otk.to_public(),
    )
    kem_secret = kem.decapsulate(PINNED_KEM_CIPHERTEXT)
    a_session = initiate_session_with_encapsulation(
        alice, bundle, (PINNED_KEM_CIPHERTEXT, kem_secret), rng=rng_a
    )
    flow: list[dict[str, str]] = []
    first = a_session._seal(b"Hello Bob! (1)", rng_a, version)
    flow.append({"from": "alice", "plaintext": "Hello Bob! (1)", "wire": first.hex()})
    accepted = accept_session(bob, PrekeySecrets({1: spk}, {2: kem}, {3: otk}), first)
    b_session = accepted.session
    for i in (1, 2, 3):
        text = f"Hello Alice! ({i})"
        wire = b_session._seal(text.encode(), rng_b, version)
        assert a_session.decrypt(wire) == text.encode()
        flow.append({"from": "bob", "plaintext": text, "wire": wire.hex()})
        if i < 3:
            text = f"Hello Bob! ({i + 1})"
            wire = a_session._seal(text.encode(), rng_a, version)
            assert b_session.decrypt(wire) == text.encode()
            flow.append({"from": "alice", "plaintext": text, "wire": wire.hex()})
    keys = {
        "a_account": a_account,
        "a_identity": a_identity,
        "b_account": b_account,
        "b_identity": b_identity,
        "spk": spk,
        "kem": kem,
        "otk": otk,
        "bundle": bundle,
        "kem_secret": kem_secret,
        "a_session": a_session,
        "accepted": accepted,
        "first": first,
        "rng_draws": {
            "alice": _draws(rng_a, _labels("alice", version)),
            "bob": _draws(rng_b, _labels("bob", version)),
        },
    }
    return keys, flow


def _labels(party: str, version: int) -> list[str]:
    """What each draw of a party's DeterministicRng becomes, in order (documented in §12)."""
    if party == "alice":
        setup = ["account key seed", "identity scalar", "ephemeral EK_A", "ratchet key (A1)"]
        sends = [("A1", False), ("A2", True), ("A3", True)]
    else:
        setup = [
            "account key seed",
            "identity scalar",
            "signed prekey 1 scalar",
            "ML-KEM-768 prekey 2 seed d || z",
            "one-time prekey 3 scalar",
        ]
        sends = [("B1", True), ("B2", True), ("B3", True)]
    labels = list(setup)
    for name, new_chain in sends:
        if new_chain:
            labels.append(f"ratchet key ({name})")
        if version == 2:
            labels.append(f"nonce ({name})")
    return labels


def _draws(rng: p.DeterministicRng, labels: list[str]) -> list[dict[str, Any]]:
    """The rng's outputs in order, each with what it became (sizes must match the labels)."""
    assert len(rng.drawn) == len(labels), (len(rng.drawn), labels)
    return [
        {"what": w, "bytes": len(d), "value": d.hex()}
        for w, d in zip(labels, rng.drawn, strict=True)
    ]


def pqxdh_and_ratchet() -> dict[str, Any]:
    """A PQXDH initial message and the first three ratchet messages each way (envelope v1)."""
    k, flow = _conversation(1)
    a_account, a_identity, b_account, b_identity = (
        k["a_account"],
        k["a_identity"],
        k["b_account"],
        k["b_identity"],
    )
    spk, kem, otk, bundle, kem_secret = k["spk"], k["kem"], k["otk"], k["bundle"], k["kem_secret"]
    a_session, accepted, first = k["a_session"], k["accepted"], k["first"]
    # Recompute the PQXDH intermediate values independently of the session code.
    message = decode_message(first)
    assert isinstance(message, InitialMessage)
    ek_private = p.DeterministicRng(ALICE_SEED)
    ek_private(64)  # Alice's account seed and identity scalar come first
    ek = ek_private(32)
    dhs = [
        p.x25519_exchange(a_identity.private, spk.public_key.raw),
        p.x25519_exchange(ek, b_identity.public_key.raw),
        p.x25519_exchange(ek, spk.public_key.raw),
        p.x25519_exchange(ek, otk.public_key.raw),
    ]
    assert p.x25519_public(ek) == message.prefix.base_key.raw
    return {
        "description": (
            "Alice (alice:1) starts a session with Bob (bob:7) using signed prekey 1, one-time"
            " KEM prekey 2 and one-time prekey 3, then the parties alternate: A1 (initial"
            " message), B1, A2, B2, A3, B3. Randomness: DeterministicRng(alice seed) gives"
            " Alice's account seed (32), identity scalar (32), EK_A (32), her first ratchet key"
            " (32), then one 32-byte ratchet key per new sending chain; DeterministicRng(bob"
            " seed) gives Bob's keys in the order listed, then his ratchet keys."
        ),
        "alice_seed": ALICE_SEED.decode(),
        "bob_seed": BOB_SEED.decode(),
        "rng_draws": k["rng_draws"],
        "alice": {
            "account_seed": a_account.private.hex(),
            "account_public": a_account.public_key.to_bytes().hex(),
            "identity_private": a_identity.private.hex(),
            "identity_public": a_identity.public_key.to_bytes().hex(),
            "ephemeral_private": ek.hex(),
        },
        "bob": {
            "account_seed": b_account.private.hex(),
            "account_public": b_account.public_key.to_bytes().hex(),
            "identity_private": b_identity.private.hex(),
            "identity_public": b_identity.public_key.to_bytes().hex(),
            "signed_prekey": spk.to_bytes().hex(),
            "kem_prekey": kem.to_bytes().hex(),
            "one_time_prekey": otk.to_bytes().hex(),
        },
        "bundle": bundle.to_bytes().hex(),
        "kem_ciphertext": PINNED_KEM_CIPHERTEXT.hex(),
        "kem_shared_secret": kem_secret.hex(),
        "dh": [dh.hex() for dh in dhs],
        "sk": shared_secret(dhs, kem_secret).hex(),
        "associated_data": a_session.associated_data.hex(),
        "consumed": {
            "one_time_prekey_id": accepted.consumed.one_time_prekey_id,
            "kem_prekey_id": accepted.consumed.kem_prekey_id,
        },
        "messages": flow,
    }


def primitives_section() -> dict[str, Any]:
    """The KDF and AEAD steps of the ratchet on fixed inputs."""
    from crypto.ratchet.chain_key import ChainKey
    from crypto.ratchet.root_chain import RootKey

    root, chain = RootKey(bytes(range(32))).advance(bytes(range(32, 64)))
    mk = chain.message_key()
    key_nonce = p.hkdf_sha256(mk.key, b"", b"VoxRatchet-v1-MessageKeys", 44)
    return {
        "root_key": bytes(range(32)).hex(),
        "dh_output": bytes(range(32, 64)).hex(),
        "next_root_key": root.key.hex(),
        "chain_key": chain.key.hex(),
        "message_key_0": mk.key.hex(),
        "next_chain_key": ChainKey(chain.key).next().key.hex(),
        "aes_key_0": key_nonce[:32].hex(),
        "nonce_0": key_nonce[32:].hex(),
        "ciphertext_0": mk.encrypt_v1(b"vox", b"ad").hex(),
        "aes_key_0_v2": mk.aead_key().hex(),
        "nonce_v2": V2_NONCE.hex(),
        "ciphertext_0_v2": mk.encrypt(V2_NONCE, b"vox", b"ad").hex(),
    }


def pqxdh_and_ratchet_v2() -> dict[str, Any]:
    """The same conversation as ``pqxdh_ratchet`` in envelope version 2."""
    k, flow = _conversation(2)
    accepted = k["accepted"]
    return {
        "description": (
            "The conversation of pqxdh_ratchet (same seeds, keys, bundle, pinned ML-KEM"
            " ciphertext, DH outputs, SK and AD) with version-2 envelopes. Randomness: as in"
            " pqxdh_ratchet, except that every encryption draws its 12-byte nonce right after"
            " the 32-byte ratchet key of a new sending chain (or first, when the chain"
            " continues). Alice: account seed (32), identity scalar (32), EK_A (32), first"
            " ratchet key (32), nonce A1 (12), ratchet key (32) and nonce for A2, ratchet key"
            " and nonce for A3. Bob: account seed (32), identity scalar (32), signed prekey"
            " scalar (32), ML-KEM seed (64), one-time prekey scalar (32), then ratchet key and"
            " nonce for each of B1, B2, B3."
        ),
        "alice_seed": ALICE_SEED.decode(),
        "bob_seed": BOB_SEED.decode(),
        "rng_draws": k["rng_draws"],
        "consumed": {
            "one_time_prekey_id": accepted.consumed.one_time_prekey_id,
            "kem_prekey_id": accepted.consumed.kem_prekey_id,
        },
        "messages": flow,
    }


SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "ratchet_kdf": primitives_section,
    "pqxdh_ratchet": pqxdh_and_ratchet,
    "pqxdh_ratchet_v2": pqxdh_and_ratchet_v2,
}


def generate() -> dict[str, Any]:
    """Every registered section, by name."""
    return {name: build() for name, build in SECTIONS.items()}


def render(vectors: dict[str, Any]) -> str:
    """The exact file content (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(vectors, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--repin-kem", action="store_true", help="print a fresh KEM constant")
    args = parser.parse_args(argv)
    if args.repin_kem:
        kem = _bob_keys(p.DeterministicRng(BOB_SEED))[3]
        ciphertext, _ = p.mlkem768_encapsulate(kem.public_key.raw)
        print(ciphertext.hex())
        return 0
    text = render(generate())
    if args.check:
        same = OUTPUT.read_text() == text
        print("vectors match" if same else "vectors DIFFER")
        return 0 if same else 1
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

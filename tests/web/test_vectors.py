"""Every pinned protocol vector of docs/ reproduced by the browser client's TypeScript, in
Chromium.

The test kit (``clients/web/testkit/testkit.js``, built from ``src/testkit.ts`` with the app
and checked by ``scripts/web-build --check``) exposes the protocol core; this module feeds it
the vectors of ``docs/vectors/*.json`` (the same values pinned in ``docs/protocol-crypto.md``
§12 and ``docs/protocol-crypto-devices-groups-attachments.md`` §5) and compares byte for
byte. The conversations are replayed from the seeds alone: every wire is produced by the
TypeScript code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import kit_call as call
from tests.web.support import kit_page

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "vectors"
CORE = json.loads((VECTORS / "protocol-crypto.json").read_text())
EXTRAS = json.loads((VECTORS / "protocol-crypto-devices-groups-attachments.json").read_text())
CONTENT = json.loads((VECTORS / "protocol-client-content.json").read_text())["vectors"]
SYNC = json.loads((VECTORS / "protocol-client-sync.json").read_text())["vectors"]


@pytest.fixture(scope="module")
def kit(browser: Any) -> Iterator[Any]:
    """A page with the test kit loaded (``window.voxTestkit``)."""
    with kit_page(browser) as page:
        yield page


def test_ratchet_kdf_steps_and_message_keys_v1_and_v2(kit: Any) -> None:
    v = CORE["ratchet_kdf"]
    got = call(kit, "ratchetKdf", v["root_key"], v["dh_output"], v["nonce_v2"])
    for key in (
        "next_root_key",
        "chain_key",
        "message_key_0",
        "next_chain_key",
        "aes_key_0",
        "nonce_0",
        "ciphertext_0",
        "aes_key_0_v2",
        "ciphertext_0_v2",
    ):
        assert got[key] == v[key], key


@pytest.mark.parametrize(("section", "version"), [("pqxdh_ratchet", 1), ("pqxdh_ratchet_v2", 2)])
def test_the_pinned_pqxdh_conversation_is_reproduced_byte_for_byte(
    kit: Any, section: str, version: int
) -> None:
    base = CORE["pqxdh_ratchet"]
    v = {**base, **CORE[section]}
    got = call(kit, "conversation", v, version)
    assert got["decapsulated"] == base["kem_shared_secret"]
    assert got["consumed"] == [v["consumed"]["one_time_prekey_id"], v["consumed"]["kem_prekey_id"]]
    for i, m in enumerate(v["messages"]):
        assert got["wires"][i] == m["wire"], f"message {i + 1} from {m['from']}"
        assert got["plaintexts"][i] == m["plaintext"]


def test_a_flipped_bit_is_refused_and_the_session_goes_on(kit: Any) -> None:
    v = {**CORE["pqxdh_ratchet"], **CORE["pqxdh_ratchet_v2"]}
    got = call(kit, "conversation", v, 2, 1)  # tamper with Bob's first reply
    assert got["tamperError"] == "AuthenticationFailed"
    assert got["wires"] == [m["wire"] for m in v["messages"]]  # nothing changed afterwards


def test_signed_device_lists_v1_v2_and_rollback(kit: Any) -> None:
    v = EXTRAS["device_list"]
    got = call(kit, "deviceList", v["account_private_seed"], v["username"], v["devices"])
    assert got["account_public_key"] == v["account_public_key"]
    assert got["v1_signed"] == v["v1"]["signed"]
    assert got["v2_signed"] == v["v2"]["signed"]
    assert got["v2_ids"] == ",".join(str(i) for i in v["v2"]["device_ids"])
    assert got["rollback"] == "DeviceListRollback"
    assert got["tampered"] == "BadSignature"


def test_safety_numbers(kit: Any) -> None:
    v = EXTRAS["safety_number"]
    got = call(kit, "safety", v["alice_public_key"], "alice", v["bob_public_key"], "bob")
    assert got["digits"] == v["digits"]
    assert got["display"] == v["display"]
    swapped = call(kit, "safety", v["bob_public_key"], "bob", v["alice_public_key"], "alice")
    assert swapped["digits"] == v["digits"]


def test_sender_key_distribution_and_group_messages_v1_and_v2(kit: Any) -> None:
    v = EXTRAS["sender_key"]
    plaintexts = [m["plaintext"] for m in v["messages_v2"]]
    nonces = [m["nonce"] for m in v["messages_v2"]]
    got = call(
        kit,
        "senderKey",
        v["seed"],
        v["group_id"],
        plaintexts,
        nonces,
        [m["message"] for m in v["messages"]],
        [m["message"] for m in v["messages_v2"]],
    )
    assert got["key_id"] == v["key_id"]
    assert got["distribution"] == v["distribution"]
    assert got["messages_v2"] == [m["message"] for m in v["messages_v2"]]
    assert got["opened"]["v1"] == [m["plaintext"] for m in v["messages"]]
    assert got["opened"]["v2"] == plaintexts
    assert got["replay"] == "DuplicateMessage"


@pytest.mark.parametrize("section", ["attachment", "padded_attachment"])
def test_attachment_blob_digest_and_pointer(kit: Any, section: str) -> None:
    v = EXTRAS[section]
    pointer = bytes.fromhex(v["pointer"])
    # content type, file name and blob id: the three str16 fields after the fixed-size head
    offset = 1 + 32 + 32 + 8 + (8 if pointer[0] == 2 else 0) + 4
    fields: list[str] = []
    for _ in range(3):
        n = int.from_bytes(pointer[offset : offset + 2], "big")
        fields.append(pointer[offset + 2 : offset + 2 + n].decode())
        offset += 2 + n
    got = call(
        kit,
        "attachment",
        v["plaintext"],
        v["key"],
        v["chunk_size"],
        section == "padded_attachment",
        *fields,
    )
    assert got["blob"] == v["blob"]
    assert got["digest"] == v["digest"]
    assert got["pointer"] == v["pointer"]
    assert got["roundtrip"] == v["plaintext"]


def test_padding_buckets(kit: Any) -> None:
    rows = EXTRAS["padding"]["buckets"]
    got = call(kit, "paddedSizes", [str(r["size"]) for r in rows])
    assert got == [str(r["padded_size"]) for r in rows]


def test_content_example_and_padding_of_protocol_client(kit: Any) -> None:
    encoded, padded_len, text = call(kit, "contentExample").split("|")
    assert (
        encoded
        == "0101"
        + "0010a99d8543039507ed6de4de7d15dcb436"
        + "0000000000000005"
        + "0000"
        + "00000002"
        + "6869"
    )
    assert padded_len == "160" and text == "hi"


@pytest.mark.parametrize("vector", CONTENT + SYNC, ids=[v["name"] for v in CONTENT + SYNC])
def test_the_pinned_content_types_are_encoded_and_decoded_byte_for_byte(
    kit: Any, vector: dict[str, Any]
) -> None:
    """docs/vectors/protocol-client-content.json (EDIT, DELETE, REACTION, TIMER and a TEXT
    with the QUOTE and EXPIRE extensions) and protocol-client-sync.json (VERIFIED), both
    ways."""
    fields = {k: v for k, v in vector.items() if k not in {"name", "hex"}}
    got = call(kit, "contentVector", fields, vector["hex"])
    assert got["encoded"] == vector["hex"]
    assert got["decoded"] == fields


def test_content_decoders_skip_unknown_extensions_and_refuse_bad_values(kit: Any) -> None:
    by_name = {v["name"]: v["hex"] for v in CONTENT}
    timer = by_name["TIMER 1 hour"]
    reply = by_name["TEXT with QUOTE and EXPIRE extensions (a reply under a 1 h timer)"]
    reaction = by_name["REACTION"]
    verified = SYNC[0]["hex"]
    target = "0010" + "0102030405060708090a0b0c0d0e0f10"
    short_target = "000f" + "0102030405060708090a0b0c0d0e0f"
    cases = {
        "unknown extension tag 0x7f is skipped": (reply + "7f0002abcd", "type 1"),
        "timer of 29 s": (timer[:-8] + "0000001d", "DecodeError"),
        "timer of 4 weeks + 1 s": (timer[:-8] + f"{4 * 7 * 86400 + 1:08x}", "DecodeError"),
        "truncated extension": (reply[:-2], "DecodeError"),
        "EXPIRE of 10 s": (reply[: -len("02000400000e10")] + "020004 0000000a", "DecodeError"),
        "emoji of 33 bytes": (reaction[:-12] + "0021" + "61" * 33, "DecodeError"),
        "trailing byte after a REACTION": (reaction + "00", "DecodeError"),
        "EDIT target of 15 bytes": (by_name["EDIT"].replace(target, short_target), "DecodeError"),
        "VERIFIED with state 2 (unverified)": (verified[:-2] + "02", "type 13"),
        "VERIFIED with state 3 (reserved)": (verified[:-2] + "03", "DecodeError"),
        "VERIFIED with state 0": (verified[:-2] + "00", "DecodeError"),
        "VERIFIED with an X25519-typed key": (
            verified.replace("626f6202d75a", "626f6201d75a"),
            "DecodeError",
        ),
    }
    hexes = [h.replace(" ", "") for h, _ in cases.values()]
    got = call(kit, "contentDecodes", hexes)
    assert dict(zip(cases, got, strict=True)) == {k: want for k, (_, want) in cases.items()}

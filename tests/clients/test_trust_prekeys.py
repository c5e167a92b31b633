"""The last-resort ML-KEM prekey rotates on the signed prekey's schedule (the previous one kept
for a grace period), on an injected clock and through a real relay."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

from clients.sdk import Event, VoxClient
from clients.sdk import identity as ids
from clients.sdk.protocol import DeviceBundle
from clients.store.memory import MemoryStore
from clients.store.models import PrekeyKind
from crypto.envelope import PqxdhPrefix
from crypto.keys import AccountKey, DeviceAddress, X25519PublicKey
from crypto.primitives import MLKEM768_CIPHERTEXT_LEN
from tests.clients.kit import texts, wait_for, wait_for_value
from tests.server.relay_harness import Relay, TestAccount

DAY = 86400.0
T0 = 1_800_000_000.0


def last_resort_ids(store: MemoryStore) -> list[int]:
    return [r.key_id for r in store.list_prekeys(PrekeyKind.LAST_RESORT_KEM)]


def names_kem(store: MemoryStore, key_id: int) -> bool:
    """Whether an initial message naming KEM prekey ``key_id`` finds its private half."""
    x25519 = X25519PublicKey.from_bytes(b"\x01" + bytes(range(32)))
    prefix = PqxdhPrefix(
        sender=DeviceAddress("alice", 1),
        account_key=AccountKey.generate().public_key,
        identity_key=x25519,
        base_key=x25519,
        signed_prekey_id=1,
        kem_prekey_id=key_id,
        one_time_prekey_id=None,
        kem_ciphertext=bytes(MLKEM768_CIPHERTEXT_LEN),
    )
    return key_id in ids.prekey_secrets_for(store, prefix).kem_prekeys


def test_the_last_resort_kem_prekey_rotates_with_the_signed_prekey_and_is_kept_for_the_grace() -> (
    None
):
    store = MemoryStore()
    me = ids.new_identity("bob", 1, None)
    first = ids.rotate_signed_prekey(store, me, now=T0)  # what registration uploads
    (lr1,) = last_resort_ids(store)
    assert first["last_resort_prekey"]["key_id"] == lr1 >= ids.LAST_RESORT_ID_BASE
    assert not ids.prekeys_due(store, T0 + 6 * DAY)
    assert ids.prekeys_due(store, T0 + 8 * DAY)

    second = ids.rotate_signed_prekey(store, me, now=T0 + 8 * DAY)
    lr2 = second["last_resort_prekey"]["key_id"]
    assert lr2 != lr1 and set(second) == {"signed_prekey", "last_resort_prekey"}
    assert last_resort_ids(store) == [lr1, lr2]  # the replaced one serves late initiators
    assert names_kem(store, lr1) and names_kem(store, lr2)
    assert not ids.prekeys_due(store, T0 + 14 * DAY)

    ids.rotate_signed_prekey(store, me, now=T0 + 16 * DAY)  # lr1 replaced only 8 days ago
    assert lr1 in last_resort_ids(store)
    third = ids.rotate_signed_prekey(store, me, now=T0 + 23 * DAY)  # 15 days after lr2 came
    assert lr1 not in last_resort_ids(store) and not names_kem(store, lr1)
    assert len(last_resort_ids(store)) == 3
    assert third["last_resort_prekey"]["key_id"] == max(last_resort_ids(store))
    assert len(store.list_prekeys(PrekeyKind.SIGNED)) == 3  # the X25519 key: same schedule


def test_a_store_from_before_the_rotation_is_due_when_its_last_resort_key_is_old() -> None:
    store = MemoryStore()
    me = ids.new_identity("bob", 1, None)
    ids.rotate_signed_prekey(store, me, now=T0)
    (old,) = store.list_prekeys(PrekeyKind.LAST_RESORT_KEM)
    store.put_prekeys([replace(old, created_at=T0 - 30 * DAY)])  # never rotated before
    assert ids.prekeys_due(store, T0 + DAY)


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def as_bundle(entry: dict[str, Any], *, use_last_resort: bool) -> DeviceBundle:
    """A device entry of ``GET /v1/prekeys/{user}`` (one-time ML-KEM key dropped to make the
    initiator use the last-resort one, as when the stock is exhausted)."""

    def signed(x: dict[str, Any]) -> tuple[int, bytes, bytes]:
        return int(x["key_id"]), unb64(x["public_key"]), unb64(x["signature"])

    otk = entry.get("one_time_prekey")
    otpq = entry.get("one_time_pq_prekey")
    return DeviceBundle(
        device_id=int(entry["device_id"]),
        identity_key=unb64(entry["identity_key"]),
        signed_prekey=signed(entry["signed_prekey"]),
        last_resort_prekey=signed(entry["last_resort_prekey"]),
        one_time_prekey=(int(otk["key_id"]), unb64(otk["public_key"])) if otk else None,
        one_time_pq_prekey=None if use_last_resort or not otpq else signed(otpq),
    )


async def test_a_connected_client_rotates_and_uploads_its_last_resort_key_and_old_sessions_open(
    relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    events: list[Event] = []
    bob.on_event(events.append)
    async with relay.client() as http:
        carol = TestAccount.new("carol")
        headers = {"Authorization": f"Bearer {await carol.register_and_login(http)}"}

        async def bundle() -> dict[str, Any]:
            resp = await http.get("/v1/prekeys/bob", params={"device_id": 1}, headers=headers)
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
            return data

        try:
            before = await bundle()  # fetched just before the rotation, used late
            old_id = before["devices"][0]["last_resort_prekey"]["key_id"]
            bob.maintenance_interval = 0.1
            await bob.connect()
            # Eight days pass while bob stays connected (his keys are aged in his store).
            with bob.store.transaction():
                for kind in (PrekeyKind.SIGNED, PrekeyKind.LAST_RESORT_KEM):
                    (record,) = bob.store.list_prekeys(kind)
                    bob.store.put_prekeys([replace(record, created_at=record.created_at - 8 * DAY)])
            await wait_for(lambda: len(bob.store.list_prekeys(PrekeyKind.LAST_RESORT_KEM)) == 2)
            newest = max(r.key_id for r in bob.store.list_prekeys(PrekeyKind.LAST_RESORT_KEM))

            async def served() -> int:
                return int((await bundle())["devices"][0]["last_resort_prekey"]["key_id"])

            await wait_for_value(served, newest, within=20)
            assert newest != old_id

            # Alice begins a session on the *old* last-resort key (no one-time ML-KEM key left
            # when she fetched): within the grace period bob still opens it.
            account_key = unb64(before["account_key"])
            alice.protocol.accept_device_list("bob", account_key, unb64(before["device_list"]))
            alice.protocol.accept_bundle(
                "bob", account_key, as_bundle(before["devices"][0], use_last_resort=True)
            )
            await alice.send_text("bob", "on the replaced last-resort key")
            await wait_for(lambda: texts(events, "alice") == ["on the replaced last-resort key"])
        finally:
            await alice.close()
            await bob.close()

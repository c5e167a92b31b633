"""Prekey replenishment on the relay's low-stock signal, signed prekey rotation, typing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from clients.sdk import Event, TypingEvent, VoxClient
from clients.store.models import PrekeyKind
from tests.clients.kit import queued, texts, wait_for, wait_for_value
from tests.server.relay_harness import Relay, make_settings, running_relay


@pytest.fixture
async def low_relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay that calls a device's stock low below 45 one-time prekeys."""
    settings = make_settings(tmp_path, limits={"prekey_low_threshold": 45})
    async with running_relay(settings) as relay:
        yield relay


async def test_low_prekey_signal_makes_the_device_upload_more(
    low_relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "a", low_relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", low_relay.base_url, "bob")
    try:
        await bob.connect()
        await alice.connect()
        start = await bob.http.prekey_count()
        assert start.one_time_prekeys == 50
        for _ in range(6):  # six claims: 44 left, below the threshold of 45
            await alice.http.bundle("bob", 1)
        counts: dict[str, int] = {}

        async def refreshed() -> bool:
            counts.update((await bob.http.prekey_count()).model_dump())
            return counts["one_time_prekeys"] > 44 and counts["one_time_pq_prekeys"] > 44

        for _ in range(100):
            if await refreshed():
                break
            await wait_for(lambda: True, within=0.05)
        assert counts["one_time_prekeys"] == 94
        # The private halves of the new prekeys are in bob's store, so they are usable.
        assert len(bob.store.list_prekeys(PrekeyKind.ONE_TIME_X25519)) >= 94
        await alice.send_text("bob", "uses a fresh prekey")
    finally:
        await alice.close()
        await bob.close()


async def test_a_long_running_client_rotates_its_signed_prekey_on_schedule(
    relay: Relay, tmp_path: Path
) -> None:
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    carol = await VoxClient.register(tmp_path / "c", relay.base_url, "carol")
    try:
        bob.maintenance_interval = 0.1
        await bob.connect()
        (first,) = bob.store.list_prekeys(PrekeyKind.SIGNED)
        # Eight days pass while bob stays connected (the key is aged in bob's store).
        with bob.store.transaction():
            bob.store.put_prekeys([replace(first, created_at=first.created_at - 8 * 86400)])
        await wait_for(lambda: len(bob.store.list_prekeys(PrekeyKind.SIGNED)) == 2)
        newest = max(r.key_id for r in bob.store.list_prekeys(PrekeyKind.SIGNED))
        assert newest != first.key_id

        async def served() -> int | None:
            spk = (await carol.http.bundle("bob", 1)).devices[0].signed_prekey
            return None if spk is None else spk.key_id

        # The new key is stored, then uploaded (clients/sdk/peers.py): the relay serves it a
        # moment after bob's store holds it.
        await wait_for_value(served, newest)
    finally:
        await bob.close()
        await carol.close()


async def test_rotated_signed_prekey_is_used_by_new_sessions_and_old_ones_keep_working(
    relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    carol = await VoxClient.register(tmp_path / "c", relay.base_url, "carol")
    events: list[Event] = []
    bob.on_event(events.append)
    try:
        await bob.connect()
        await alice.send_text("bob", "old session")
        await wait_for(lambda: texts(events, "alice") == ["old session"])
        assert not await bob.rotate_signed_prekey()  # not due yet
        assert await bob.rotate_signed_prekey(force=True)
        assert len(bob.store.list_prekeys(PrekeyKind.SIGNED)) == 2  # the old one is kept
        bundle = await carol.http.bundle("bob", 1)
        newest = max(r.key_id for r in bob.store.list_prekeys(PrekeyKind.SIGNED))
        spk = bundle.devices[0].signed_prekey
        assert spk is not None and spk.key_id == newest
        await carol.send_text("bob", "new session")
        await alice.send_text("bob", "old session still works")
        await wait_for(lambda: texts(events, "carol") == ["new session"])
        await wait_for(lambda: len(texts(events, "alice")) == 2)
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_typing_is_ephemeral_and_never_queued(relay: Relay, tmp_path: Path) -> None:
    alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    events: list[Event] = []
    bob.on_event(events.append)
    try:
        await bob.connect()
        await alice.send_text("bob", "hello")  # session set-up
        await alice.send_typing("bob", True)
        await wait_for(lambda: any(isinstance(e, TypingEvent) for e in events))
        typing = next(e for e in events if isinstance(e, TypingEvent))
        assert typing.sender == "alice" and typing.active and typing.conversation == "alice"
        await bob.disconnect()
        await alice.send_typing("bob", False)  # bob is offline: dropped, never stored
        assert await queued(relay, "bob") == 0
    finally:
        await alice.close()
        await bob.close()


async def test_invite_only_relay_needs_a_valid_invite(tmp_path: Path) -> None:
    import asyncio
    import sys

    from clients.sdk import RegistrationClosed

    settings = make_settings(tmp_path, registration="invite")
    async with running_relay(settings) as relay:
        with pytest.raises(RegistrationClosed, match="invite_required"):
            await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        with pytest.raises(RegistrationClosed, match="invalid_invite"):
            await VoxClient.register(tmp_path / "a", relay.base_url, "alice", invite="nope")
        exe = str(Path(sys.executable).with_name("vox-relay"))
        proc = await asyncio.create_subprocess_exec(
            exe,
            "invite",
            "create",
            "--data-dir",
            str(settings.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        token = out.decode().split()[-1]
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice", invite=token)
        await alice.close()


async def test_maintenance_prunes_envelope_ids_the_relay_can_no_longer_redeliver(
    relay: Relay, tmp_path: Path
) -> None:
    import time

    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    try:
        ttl = (await bob.config()).limits["envelope_ttl_seconds"]
        now = time.time()
        with bob.store.transaction():
            bob.store.mark_seen("env:ancient", now - ttl - 2 * 86400)
            bob.store.mark_seen("env:recent", now - ttl + 3600)  # may still come again
            bob.store.mark_seen("pqxdh:ancient", now - ttl - 2 * 86400)  # a replay guard
        await bob.connect()  # the first maintenance round runs at once
        await wait_for(lambda: not bob.store.is_seen("env:ancient"))
        assert bob.store.is_seen("env:recent") and bob.store.is_seen("pqxdh:ancient")
    finally:
        await bob.close()

"""``vox receive`` as a reader: each message line starts with the message's id (usable with
edit, delete, react and ``--reply-to``), and what it printed counts as read on this device —
read receipts go to the sender and a disappearing message's countdown starts, as reading in
the TUI does — whether it runs alone or through a running daemon. Timer changes are history
rows on every device. Real ``vox`` processes against a real relay."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from clients.sdk import Event, ReceiptEvent, VoxClient
from clients.store import DeliveryState, SqliteStore
from tests.clients.kit import VOX, vox, wait_for
from tests.server.relay_harness import Relay

pytestmark = pytest.mark.timeout(600)  # many real processes on a loaded machine


async def ok(home: Path, *args: str) -> str:
    code, out, err = await vox(home, *args)
    assert code == 0, err
    return out


async def alice_and_bob(relay: Relay, tmp_path: Path) -> tuple[Path, Path]:
    """Two registered profiles (alice's home, bob's home)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for home, name in ((a, "alice"), (b, "bob")):
        await ok(home, "register", name, "--server", relay.base_url)
    return a, b


def line_of(out: str, sender: str, text: str) -> re.Match[str]:
    """The ``ID  HH:MM:SS  SENDER:DEVICE: TEXT`` line of ``vox receive``."""
    found = re.search(
        rf"^([0-9a-f]{{32}})  \d\d:\d\d:\d\d  {sender}:\d+: {re.escape(text)}$", out, re.M
    )
    assert found is not None, out
    return found


def expiry(home: Path, message_id: str) -> tuple[DeliveryState, float | None]:
    """(state, expire_at) of a message in a profile's store (no process holds it now)."""
    store = SqliteStore.open(home)
    try:
        stored = store.get_message(message_id)
        assert stored is not None
        return stored.state, stored.expire_at
    finally:
        store.close()


async def test_receive_prints_ids_and_starts_the_countdown_of_what_it_printed(
    relay: Relay, tmp_path: Path
) -> None:
    a, b = await alice_and_bob(relay, tmp_path)
    # An hour, not seconds: under load the react + reply below can take longer than a short
    # timer, and the message would vanish on alice's side before bob's reaction to it arrives.
    assert (await ok(a, "disappear", "bob", "1h")).strip() == (
        "you set disappearing messages to 1 hour"
    )
    mid = (await ok(a, "send", "bob", "this will vanish")).strip()
    before = time.time()
    out = await ok(b, "receive", "--wait", "1")
    assert re.search(r"^\d\d:\d\d:\d\d alice:1 set disappearing messages to 1 hour$", out, re.M)
    assert line_of(out, "alice", "this will vanish").group(1) == mid
    # Printed = read on this device: the countdown runs from then, a read receipt goes out.
    state, expire_at = expiry(b, mid)
    assert state is DeliveryState.READ
    assert expire_at is not None and before + 3600 <= expire_at <= time.time() + 3600
    got = [json.loads(x) for x in (await ok(a, "receive", "--json", "--wait", "1")).splitlines()]
    assert {"kind": "receipt", "state": "read", "message_ids": [mid]}.items() <= next(
        g for g in got if g["kind"] == "receipt" and g["state"] == "read"
    ).items()
    # The id printed is the one the other commands take.
    await ok(b, "react", "alice", mid, "👍")
    reply = (await ok(b, "send", "alice", "ok", "--reply-to", mid)).strip()
    out = await ok(a, "receive", "--wait", "1")
    assert line_of(out, "bob", "ok").group(1) == reply
    assert re.search(rf"^\d\d:\d\d:\d\d bob:1 reacted 👍 to {mid}$", out, re.M), out


async def test_a_timer_change_is_a_row_of_history_on_both_sides(
    relay: Relay, tmp_path: Path
) -> None:
    a, b = await alice_and_bob(relay, tmp_path)
    await ok(a, "send", "bob", "hi")
    await ok(a, "disappear", "bob", "1h")
    await ok(b, "receive", "--wait", "1")
    await ok(b, "disappear", "alice", "off")
    await ok(a, "receive", "--wait", "1")
    ids = []
    for home, peer in ((a, "bob"), (b, "alice")):
        rows = (await ok(home, "history", peer)).splitlines()
        ids.append([r[:32] for r in rows])
        assert [re.sub(r"^[0-9a-f]{32}  \S+ \S+  ", "", r) for r in rows] == [
            "alice: hi",
            "alice set disappearing messages to 1 hour",
            "bob turned off disappearing messages",
        ], rows
        as_json = [json.loads(x) for x in (await ok(home, "history", peer, "--json")).splitlines()]
        assert [(m["from"], m.get("timer")) for m in as_json[1:]] == [("alice", 3600), ("bob", 0)]
        assert all("text" not in m for m in as_json[1:])
    assert ids[0] == ids[1]  # the same rows, under the same ids, on both sides


async def test_receive_through_the_daemon_marks_what_it_printed_read(
    relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
    b = tmp_path / "bob"
    await ok(b, "register", "bob", "--server", relay.base_url)
    events: list[Event] = []
    alice.on_event(events.append)
    await alice.connect()
    await alice.set_timer("bob", 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    daemon = await asyncio.create_subprocess_exec(
        VOX, "--home", str(b), "daemon",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        assert b"listening on" in await asyncio.wait_for(daemon.stdout.readline(), 60)
        receive = await asyncio.create_subprocess_exec(
            VOX, "--home", str(b), "receive", "--wait", "8",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert receive.stdout is not None
        # It prints only what arrives once it listens: send until it has printed something.
        # (--wait 8: on a loaded machine a message can take seconds to come round.)
        sent: list[str] = []
        first = b""
        while not first:
            sent.append((await alice.send_text("bob", f"number {len(sent)}")).id)
            try:
                first = await asyncio.wait_for(receive.stdout.readline(), 1.0)
            except TimeoutError:
                continue
            if not first:  # end of output: receive gave up before anything came
                _, err = await receive.communicate()
                pytest.fail(f"receive printed nothing (exit {receive.returncode}): {err.decode()}")
        rest, err = await asyncio.wait_for(receive.communicate(), 60)
        assert receive.returncode == 0, err.decode()
        printed = [
            m.group(1)
            for m in re.finditer(
                r"^([0-9a-f]{32})  .* alice:1: number \d+$", (first + rest).decode(), re.M
            )
        ]
        assert printed and set(printed) <= set(sent)

        def read_receipts() -> set[str]:
            return {
                mid
                for e in events
                if isinstance(e, ReceiptEvent) and e.kind is DeliveryState.READ
                for mid in e.message_ids
            }

        await wait_for(lambda: set(printed) <= read_receipts())
        assert read_receipts() <= set(printed)  # only what it printed
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 60)
        await alice.close()
    for mid in printed:
        state, expire_at = expiry(b, mid)
        assert state is DeliveryState.READ and expire_at is not None

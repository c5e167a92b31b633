"""Every surface tells the truth about queued *operations* (edits, deletes, reactions, timer
changes, verification syncs), through a real relay that is stopped and restarted, with real
``vox`` processes where the CLI is the surface."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import serving, socket_path
from clients.daemon.remote import RemoteClient
from clients.sdk import DeliveryState, Event, Message, MessageSent, SendFailed, VoxClient
from clients.tui import ChatApp, SdkBackend
from clients.tui.render import render_message
from tests.clients.kit import RelayProcess, vox, wait_for
from tests.clients.test_tui import shown, type_line, until

EXIT_QUEUED = 75

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    """A real relay process (stopped and started again by the tests)."""
    process = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await process.start()
    try:
        yield process
    finally:
        process.stop()


async def _pair(tmp_path: Path, relay: RelayProcess) -> str:
    """Alice and Bob registered; Alice sent Bob one text (its id). No client left open."""
    alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    await bob.close()
    try:
        return (await alice.send_text("bob", "hi")).id
    finally:
        await alice.close()


def _row(out: str, message_id: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(message_id))


# --- 3. a queued timer change reads "queued", then "sent" -----------------------------------


async def test_a_queued_timer_change_reads_queued_until_the_relay_accepts_it(
    tmp_path: Path,
    relay: RelayProcess,
) -> None:
    a = tmp_path / "a"
    await _pair(tmp_path, relay)
    relay.stop()
    code, out, err = await vox(a, "disappear", "bob", "1h")
    assert code == EXIT_QUEUED, err
    timer_id = out.strip()
    code, out, err = await vox(a, "history", "bob")
    assert code == 0, err
    assert _row(out, timer_id).endswith("alice set disappearing messages to 1 hour (queued)")
    code, out, err = await vox(a, "history", "bob", "--json")
    row = next(r for r in map(json.loads, out.splitlines()) if r["id"] == timer_id)
    assert row["timer"] == 3600 and row["state"] == "pending"

    await relay.start()
    alice = await VoxClient.open(a)
    events: list[Event] = []
    alice.on_event(events.append)
    try:
        notice = alice.history("bob")[-1]
        assert notice.timer == 3600 and notice.state is DeliveryState.PENDING
        assert render_message(notice).plain.endswith("1 hour  …")  # the TUI's row
        await alice.connect()
        await wait_for(lambda: any(isinstance(e, MessageSent) for e in events), within=60)
        assert [e.message_id for e in events if isinstance(e, MessageSent)] == [timer_id]
        notice = alice.history("bob")[-1]
        assert notice.state is DeliveryState.SENT
        assert render_message(notice).plain.endswith("set disappearing messages to 1 hour")
    finally:
        await alice.close()
    code, out, err = await vox(a, "history", "bob")
    assert _row(out, timer_id).endswith("alice set disappearing messages to 1 hour")


def test_our_failed_timer_change_reads_not_sent_in_the_tui() -> None:
    failed = Message("a" * 32, "bob", "alice", 1, 0, 0, outgoing=True, timer=60,
                     state=DeliveryState.FAILED)  # fmt: skip
    row = render_message(failed).plain
    assert row.endswith("you set disappearing messages to 1 minute  ✗ not sent")


# --- 1. vox status (and the daemon's status, and the history) list queued operations --------


async def test_status_and_history_list_queued_operations_then_forget_them_once_sent(
    tmp_path: Path,
    relay: RelayProcess,
) -> None:
    a = tmp_path / "a"
    hi = await _pair(tmp_path, relay)
    relay.stop()
    ops = []
    for args in (("edit", "bob", hi, "hi!"), ("react", "bob", hi, "👍"),
                 ("disappear", "bob", "1h")):  # fmt: skip
        code, out, err = await vox(a, *args)
        assert code == EXIT_QUEUED, err
        ops.append(out.strip())
    code, out, err = await vox(a, "send", "bob", "later")
    assert code == EXIT_QUEUED, err
    later = out.strip()

    code, out, err = await vox(a, "status")
    assert code == 0, err
    assert "queued: 4" in out  # in the order they go out, each with what it is
    assert [line.split()[:2] for line in out.splitlines()[2:]] == [
        [ops[0], "bob"], [ops[1], "bob"], [ops[2], "bob"], [later, "bob"],
    ]  # fmt: skip
    assert _row(out, f"  {ops[0]}").endswith(f"[edit of #{hi[:6]}]")
    assert _row(out, f"  {ops[1]}").endswith(f"[reaction to #{hi[:6]}]")
    assert _row(out, f"  {ops[2]}").endswith("[timer change]")
    assert _row(out, f"  {later}").endswith("later")
    code, out, err = await vox(a, "history", "bob")
    assert _row(out, hi).endswith("alice: hi! (edited)  👍 (edit queued) (reaction queued)")

    await relay.start()
    alice = await VoxClient.open(a)
    events: list[Event] = []
    alice.on_event(events.append)
    try:
        async with serving(alice, a):  # the daemon's view of the same queue
            remote = await RemoteClient.connect(socket_path(a))
            try:
                status = await remote.call("status")
                queued = [(q["id"], q["kind"], q["target"], q["state"]) for q in status["queued"]]
                assert queued == [
                    (ops[0], "edit", hi, "queued"), (ops[1], "reaction", hi, "queued"),
                    (ops[2], "timer", None, "queued"), (later, "text", None, "queued"),
                ]  # fmt: skip
                assert status["failed"] == []
                [row] = [m for m in await remote.call("history", conversation="bob")
                         if m["id"] == hi]  # fmt: skip
                assert row["unsent"] == [{"kind": "edit", "state": "queued"},
                                         {"kind": "reaction", "state": "queued"}]  # fmt: skip
                await alice.connect()
                await wait_for(lambda: len(_sent(events)) == 4, within=60)
                assert (await remote.call("status"))["queued"] == []
            finally:
                await remote.close()
        assert {e.message_id: e.target for e in _sent(events)} == {
            ops[0]: hi, ops[1]: hi, ops[2]: None, later: None,
        }  # fmt: skip
        assert alice.operations() == []
        assert [m.unsent for m in alice.history("bob") if m.id == hi] == [()]
    finally:
        await alice.close()
    code, out, err = await vox(a, "status")
    assert "queued: 0" in out and "not sent" not in out


def _sent(events: list[Event]) -> list[MessageSent]:
    return [e for e in events if isinstance(e, MessageSent)]


def test_the_tui_row_says_which_of_our_operations_are_queued_or_not_sent() -> None:
    message = Message("a" * 32, "bob", "alice", 1, 0, 0, text="hi!", outgoing=True,
                      edited=True, state=DeliveryState.SENT,
                      unsent=(("edit", "failed"), ("reaction", "queued")))  # fmt: skip
    row = render_message(message).plain
    assert row.endswith("hi! (edited)  ✓  ✗ edit not sent  … reaction queued")


# --- 2. an operation refused for good: its local effect stays, marked "not sent" ------------


async def _edit_refused_later(tmp_path: Path, relay: RelayProcess) -> tuple[str, str]:
    """Alice's edit of her message to Bob is queued while the relay is down; then Bob deletes
    his account: the queued edit can never be delivered. Returns (message id, edit id)."""
    a, b = tmp_path / "a", tmp_path / "b"
    hi = await _pair(tmp_path, relay)
    relay.stop()
    code, out, err = await vox(a, "edit", "bob", hi, "hi, edited")
    assert code == EXIT_QUEUED, err
    edit = out.strip()
    await relay.start()
    code, _, err = await vox(b, "account", "delete", "--yes")
    assert code == 0, err
    return hi, edit


async def test_a_queued_edit_refused_for_good_is_shown_not_sent_everywhere(
    tmp_path: Path,
    relay: RelayProcess,
) -> None:
    a = tmp_path / "a"
    hi, edit = await _edit_refused_later(tmp_path, relay)
    alice = await VoxClient.open(a)
    events: list[Event] = []
    alice.on_event(events.append)
    try:
        async with serving(alice, a):
            remote = await RemoteClient.connect(socket_path(a))
            try:
                await remote.call("subscribe")
                heard: list[dict[str, Any]] = []

                async def listen() -> None:
                    async for event in remote.events():
                        heard.append(event)

                listener = asyncio.create_task(listen())
                await alice.connect()  # the outbox resumes: the relay refuses the edit
                await wait_for(lambda: any(e["kind"] == "failed" for e in heard), within=60)
                listener.cancel()
                [failed] = [e for e in heard if e["kind"] == "failed"]
                assert (failed["id"], failed["content"], failed["target"]) == (edit, "edit", hi)
                assert failed["conversation"] == "bob" and failed["reason"]
                status = await remote.call("status")
                assert status["queued"] == []
                [op] = status["failed"]
                assert (op["id"], op["kind"], op["target"], op["state"]) == (
                    edit,
                    "edit",
                    hi,
                    "failed",
                )
            finally:
                await remote.close()
        [event] = [e for e in events if isinstance(e, SendFailed)]
        assert (event.kind, event.target) == ("edit", hi)
        [mine] = [m for m in alice.history("bob") if m.id == hi]
        assert mine.text == "hi, edited" and mine.unsent == (("edit", "failed"),)
    finally:
        await alice.close()

    code, out, err = await vox(a, "status")
    assert code == 0, err
    assert "queued: 0" in out and "not sent (refused for good): 1" in out
    assert f"{edit}  bob  [edit of #{hi[:6]}]" in out
    code, out, err = await vox(a, "history", "bob")
    assert _row(out, hi).endswith("alice: hi, edited (edited) (edit not sent)")
    # Refused at once (nothing queued): the command fails, and the history says so too.
    code, out, err = await vox(a, "react", "bob", hi, "👍")
    assert code == 1, err
    code, out, err = await vox(a, "history", "bob")
    assert _row(out, hi).endswith("(edit not sent) (reaction not sent)")


async def test_the_tui_shows_a_queued_edit_refused_for_good_as_not_sent(
    tmp_path: Path, relay: RelayProcess
) -> None:
    hi, _ = await _edit_refused_later(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    app = ChatApp(SdkBackend(alice), open_conversation="bob")
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: shown(app, "✗ edit not sent:"), within=60)
            await until(pilot, lambda: "✗ edit not sent" in _tui_row(app, hi))
            assert "hi, edited (edited)" in _tui_row(app, hi)
    finally:
        await alice.close()


def _tui_row(app: ChatApp, message_id: str) -> str:
    from clients.tui.rows import MessageRow, dom_id

    return str(app.query_one(f"#{dom_id(message_id)}", MessageRow).content)


# --- 4. verification syncs go through the outbox; unverify -----------------------------------


async def test_a_verification_made_offline_reaches_our_other_device_and_so_does_unverify(
    tmp_path: Path,
    relay: RelayProcess,
) -> None:
    a, a2 = tmp_path / "a", tmp_path / "a2"
    alice = await VoxClient.register(a, relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    await bob.close()
    await alice.connect()
    invitation = await alice.link()
    laptop = await VoxClient.join(a2, relay.base_url, invitation.code)
    try:
        await laptop.connect()
        assert await alice.wait_linked(invitation, within=30) == invitation.device_id
        await laptop.send_text("bob", "hi from the laptop")  # the laptop knows bob (TOFU)
        await alice.send_text("bob", "hi from the phone")
    finally:
        await laptop.close()
    await alice.close()

    relay.stop()  # compared the numbers in person, no network: accepted anyway
    code, out, err = await vox(a, "verify", "bob", "--accept")
    assert code == 0, err
    assert out.strip().endswith("status: verified")
    code, out, err = await vox(a, "status")
    assert "queued: 1" in out and out.rstrip().endswith("bob  [verify]"), out

    await relay.start()
    alice = await VoxClient.open(a)
    laptop = await VoxClient.open(a2)
    try:
        await alice.connect()  # the queued sync goes out
        await wait_for(lambda: alice.operations() == [], within=60)
        await laptop.connect()
        await wait_for(lambda: _trust(laptop, "bob") == "verified", within=60)

        # Taken back on the phone: trusted on first use again, on the laptop too.
        assert not (await alice.clear_verification("bob")).verified
        assert _trust(alice, "bob") == "tofu"
        await wait_for(lambda: _trust(laptop, "bob") == "tofu", within=60)
        assert (await laptop.send_text("bob", "still fine")).id  # sending continues
    finally:
        await laptop.close()
        await alice.close()
    code, out, err = await vox(a, "verify", "bob", "--accept", "--clear")
    assert code == 2 and "exclude each other" in err


def _trust(client: VoxClient, username: str) -> str | None:
    peer = client.store.get_peer(username)
    return None if peer is None else str(peer.trust)


async def test_the_tui_shows_an_edit_queued_while_offline_until_the_relay_takes_it(
    tmp_path: Path, relay: RelayProcess
) -> None:
    hi = await _pair(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    app = ChatApp(SdkBackend(alice), open_conversation="bob")
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: alice.connected and "hi" in _tui_row(app, hi), within=60)
            relay.stop()
            await until(pilot, lambda: not alice.connected, within=60)
            await type_line(pilot, f"/edit {hi[:6]} hi, edited offline")
            await until(pilot, lambda: shown(app, "/edit: queued"), within=60)
            assert _tui_row(app, hi).endswith("(edited)  ✓  … edit queued")
            await relay.start()
            await until(pilot, lambda: "queued" not in _tui_row(app, hi), within=60)
            assert _tui_row(app, hi).endswith("hi, edited offline (edited)  ✓")
    finally:
        await alice.close()


async def test_vox_receive_json_says_when_a_queued_operation_was_sent(
    tmp_path: Path, relay: RelayProcess
) -> None:
    a = tmp_path / "a"
    hi = await _pair(tmp_path, relay)
    relay.stop()
    code, out, err = await vox(a, "react", "bob", hi, "👍")
    assert code == EXIT_QUEUED, err
    reaction = out.strip()
    await relay.start()
    code, out, err = await vox(a, "receive", "--json", "--wait", "3")
    assert code == 0, err
    sent = [e for e in map(json.loads, out.splitlines()) if e["kind"] == "sent"]
    assert [(e["id"], e["conversation"], e["target"]) for e in sent] == [(reaction, "bob", hi)]


def test_an_accepted_unverify_clears_a_refused_verify_of_the_same_user() -> None:
    from types import SimpleNamespace

    from clients.sdk.messaging import Outbox, _load_failed, _save_failed
    from clients.store import MemoryStore

    store = MemoryStore()

    def refused(
        mid: str, kind: str, conversation: str, target: str | None = None
    ) -> dict[str, Any]:
        return {"id": mid, "kind": kind, "c": conversation, "t": target, "reason": "r", "at": 1}

    _save_failed(
        store,
        [
            refused("1", "verify", "bob"),
            refused("2", "verify", "carol"),
            refused("3", "edit", "bob", "m1"),
            refused("4", "unverify", "dave"),
        ],
    )
    outbox = Outbox(SimpleNamespace(store=store))
    outbox._clear_failed([("unverify", None, "bob"), ("reaction", "m1", "bob")])
    assert [f["id"] for f in _load_failed(store)] == ["2", "3", "4"]
    outbox._clear_failed([("verify", None, "dave"), ("edit", "m1", "bob")])
    assert [f["id"] for f in _load_failed(store)] == ["2"]


def test_history_decodes_only_the_conversations_queued_operations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from clients.sdk import messaging
    from clients.sdk.content import EditContent, TextContent, decode_content
    from clients.store import MemoryStore, OutboxEntry

    store = MemoryStore()
    target = b"\x01" * 16
    queued: list[tuple[str, TextContent | EditContent]] = [
        ("bob", TextContent(text=f"t{i}", sent_at_ms=i)) for i in range(5)
    ]
    queued += [(c, EditContent(target=target, text="x", sent_at_ms=9)) for c in ("bob", "carol")]
    for at, (conversation, content) in enumerate(queued):
        store.outbox_put(OutboxEntry(content.id_hex, conversation, content.to_bytes(), at))
    decoded: list[bytes] = []

    def counting(data: bytes) -> object:
        decoded.append(data)
        return decode_content(data)

    monkeypatch.setattr(messaging, "decode_content", counting)
    core = SimpleNamespace(store=store)
    core.outbox = messaging.Outbox(core)
    assert messaging.history(core, "bob") == []
    assert len(decoded) == 1  # the edit in bob's conversation; not the texts, not carol's
    assert [op.conversation for op in messaging.operations(core)] == ["bob", "carol"]

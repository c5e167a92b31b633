"""The chat TUI driven with Textual's pilot, on real SDK clients through a real relay on loopback.

Alice runs the TUI; Bob and Carol are SDK clients in the same event loop. We press keys in
Alice's window and assert on what it shows, and on what the others receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import delete
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from clients.sdk import Event, Message, TypingEvent, VoxClient
from clients.tui import ChatApp, SdkBackend
from clients.tui.app import BRAND_THEME
from server.db.models import Account
from tests.clients.kit import tamper_queued_payload
from tests.server.relay_harness import Relay, make_settings, running_relay

BRAND = {
    "name": "Acme Chat",
    "primary_color": "#e11d48",
    "accent_color": "#f59e0b",
    "background_color": "#111827",
    "welcome_text": "Welcome to Acme",
}
SIZE = (110, 30)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with running_relay(make_settings(tmp_path, brand=BRAND)) as r:
        yield r


@dataclasses.dataclass
class People:
    alice: VoxClient
    bob: VoxClient
    carol: VoxClient
    bob_got: list[Event]
    carol_got: list[Event]


@pytest.fixture
async def people(relay: Relay, tmp_path: Path) -> AsyncIterator[People]:
    clients = [
        await VoxClient.register(tmp_path / name, relay.base_url, name)
        for name in ("alice", "bob", "carol")
    ]
    bob_got: list[Event] = []
    carol_got: list[Event] = []
    clients[1].on_event(bob_got.append)
    clients[2].on_event(carol_got.append)
    try:
        await clients[1].connect()
        await clients[2].connect()
        alice, bob, carol = clients
        yield People(alice, bob, carol, bob_got, carol_got)
    finally:
        for client in clients:
            await client.close()


async def until(pilot: Pilot[None], predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Let the app run until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            app = pilot.app
            screen = (lines(app), status(app)) if isinstance(app, ChatApp) else ()
            raise AssertionError(f"the screen did not reach the expected state; it shows {screen}")
        await pilot.pause(0.05)


def lines(app: ChatApp) -> list[str]:
    return [str(w.content) for w in app.query(".msg, .system").results(Static)]


def shown(app: ChatApp, needle: str) -> bool:
    return any(needle in line for line in lines(app))


def status(app: ChatApp) -> str:
    return str(app.query_one("#status", Static).content)


def chat_list(app: ChatApp) -> list[str]:
    ol = app.query_one("#conversations", OptionList)
    return [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Message) and e.text is not None]


def save_screenshot(svg: str) -> None:
    """``VOX_TUI_SCREENSHOT=docs/tui.svg pytest ...`` refreshes the screenshot in the docs."""
    if target := os.environ.get("VOX_TUI_SCREENSHOT"):
        Path(target).write_text(svg, encoding="utf-8")


async def type_line(pilot: Pilot[None], text: str) -> None:
    """Type ``text`` into the input box and press Enter (long lines and emoji are pasted, not
    typed)."""
    if len(text) > 24 or not text.isascii():
        pilot.app.query_one("#input", Input).value = text
    else:
        await pilot.press(*text)
    await pilot.press("enter")


async def test_alice_chats_with_bob_with_receipts_typing_and_brand(people: People) -> None:
    await people.alice.verify("carol")
    await people.alice.create_group("weekend", ["bob", "carol"])
    await people.bob.send_text("alice", "hello alice, lunch at 12?")
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "bob: hello alice, lunch at 12?"))
        # Brand from /v1/config: title and theme colours.
        assert app.title == "Acme Chat"
        assert app.sub_title == "@alice"
        assert app.theme == BRAND_THEME
        theme = app.get_theme(BRAND_THEME)
        assert theme is not None and theme.primary.lower() == "#e11d48"

        await type_line(pilot, "hi bob")
        await until(pilot, lambda: "hi bob" in texts(people.bob_got))
        # Bob's client acks with a delivery receipt; then Bob reads it.
        await until(pilot, lambda: shown(app, "you: hi bob  ✓✓"))
        await people.bob.mark_read("alice")
        await until(pilot, lambda: shown(app, "you: hi bob  ✓✓ read"))

        # Alice had the conversation open, so she sent Bob a read receipt for his message.
        def bobs_first() -> str:
            return next(m.state.value for m in people.bob.history("alice") if m.outgoing)

        await until(pilot, lambda: bobs_first() == "read")

        await people.bob.send_typing("alice", True)
        await until(pilot, lambda: status(app) == "bob is typing…")
        await people.bob.send_text("alice", "done typing")
        await until(pilot, lambda: shown(app, "bob: done typing"))
        # The message clears "typing" (or, if the ephemeral typing frame arrived after the
        # message, its display times out).
        await until(pilot, lambda: status(app) == "")

        # A reply (by the short id shown), an edit of it, reactions both ways (the screenshot
        # shows them).
        lunch = next(m.id for m in app.shown.values() if m.text == "hello alice, lunch at 12?")
        await type_line(pilot, f"/reply {lunch[:6]} yes, 12 is fine")
        await until(pilot, lambda: "yes, 12 is fine" in texts(people.bob_got))
        await type_line(pilot, "/edit yes, 12:30 is better")
        await until(pilot, lambda: shown(app, "you: yes, 12:30 is better (edited)"))
        answer = next(m.id for m in app.shown.values() if m.text == "yes, 12:30 is better")
        await people.bob.react("alice", answer, "👍")
        await until(pilot, lambda: shown(app, "yes, 12:30 is better (edited)  👍"))
        await type_line(pilot, f"/react {lunch[:6]} 🎉")
        await until(pilot, lambda: shown(app, "bob: hello alice, lunch at 12?  🎉"))

        # Typing in the box sends an ephemeral typing event to Bob.
        def typing_from_alice() -> list[bool]:
            return [e.active for e in people.bob_got if isinstance(e, TypingEvent)]

        await pilot.press("x")
        await until(pilot, lambda: typing_from_alice()[-1:] == [True])
        # Clearing the draft tells Bob at once that Alice stopped.
        await pilot.press("backspace")
        await until(pilot, lambda: typing_from_alice()[-1:] == [False])

        # Another conversation gets an unread count; Bob types again (the screenshot's state).
        await people.carol.send_text("alice", "are you there?")
        await until(pilot, lambda: "@ carol (1)" in chat_list(app))
        assert "# weekend" in chat_list(app)
        await people.bob.send_typing("alice", True)
        await until(pilot, lambda: status(app) == "bob is typing…")
        await pilot.press("backspace", *"on my way")
        svg = app.export_screenshot()
        assert "Acme" in svg and "hi" in svg
        save_screenshot(svg)


async def test_unread_counts_and_switching_conversations(people: People) -> None:
    await people.carol.send_text("alice", "zero")
    await people.alice.receive(wait=0.3)  # stored, not read yet
    await people.alice.disconnect()
    await people.bob.send_text("alice", "first from bob")
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "first from bob"))
        assert "@ carol (1)" in chat_list(app)  # counted from the store at start
        await people.carol.send_text("alice", "one")
        await people.carol.send_text("alice", "two")
        await until(pilot, lambda: "@ carol (3)" in chat_list(app))
        assert not shown(app, "one")  # still looking at bob
        await type_line(pilot, "/chat carol")
        await until(pilot, lambda: shown(app, "carol: two"))
        assert "@ carol" in chat_list(app)
        assert "@ carol (3)" not in chat_list(app)
        await until(
            pilot,
            lambda: (
                all(
                    m.state.value == "read" for m in people.carol.history("alice") if not m.outgoing
                )
                and people.carol.history("alice")[-1].state.value == "read"
            ),
        )


async def test_send_file_command_uploads_and_bob_receives_it(
    people: People, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"secret notes\n" * 1000)
    await people.alice.verify("bob")  # first contact: bob's key is trusted on first use
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "Welcome to Acme\nNo messages with bob yet."))
        await type_line(pilot, f"/send-file {path}")
        await until(pilot, lambda: shown(app, "you: 📎 notes.txt (12.7 KiB)"))
        assert status(app) == "sent notes.txt (12.7 KiB)"  # the file's size, not the padded one
        await until(
            pilot,
            lambda: any(
                isinstance(e, Message) and e.attachment is not None for e in people.bob_got
            ),
        )
        got = next(e for e in people.bob_got if isinstance(e, Message) and e.attachment)
        dest = await people.bob.download(got, tmp_path / "got.txt")
        assert dest.read_bytes() == path.read_bytes()

        # Bob answers with a file; /save downloads, verifies and decrypts it.
        reply = tmp_path / "reply.bin"
        reply.write_bytes(os.urandom(70_000))
        await people.bob.send_file("alice", reply)
        await until(pilot, lambda: shown(app, "bob: 📎 reply.bin (68.4 KiB)"))
        saved = tmp_path / "saved"
        saved.mkdir()
        await type_line(pilot, f"/save {saved}")
        await until(pilot, lambda: shown(app, f"saved reply.bin to {saved / 'reply.bin'}"))
        assert (saved / "reply.bin").read_bytes() == reply.read_bytes()
        assert shown(app, f"bob: 📎 reply.bin (68.4 KiB) → {saved / 'reply.bin'}")

        await type_line(pilot, "/send-file /nonexistent/file")
        await until(pilot, lambda: shown(app, "no such file: /nonexistent/file"))
        await type_line(pilot, "/bogus")
        await until(pilot, lambda: shown(app, "unknown command /bogus — /help lists the commands"))


async def test_a_changed_key_warns_blocks_sending_until_accepted(
    people: People, relay: Relay, tmp_path: Path
) -> None:
    await people.bob.send_text("alice", "before")
    people.alice.engine.device_list_ttl = 0  # refetch bob's device list before every send
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "bob: before"))
        warning = app.query_one("#warning", Static)
        assert not warning.has_class("visible")
        # Bob loses his phone; the operator frees the name and bob registers again (new key).
        await people.bob.close()
        async with relay.state.sessions() as session:
            await session.execute(delete(Account).where(Account.username == "bob"))
            await session.commit()
        bob2 = await VoxClient.register(tmp_path / "bob-new", relay.base_url, "bob")
        try:
            bob2_got: list[Event] = []
            bob2.on_event(bob2_got.append)
            await bob2.connect()
            await type_line(pilot, "are you still you?")
            await until(pilot, lambda: warning.has_class("visible"))
            assert "bob's safety number changed" in str(warning.content)
            assert "⚠" in " ".join(chat_list(app))
            assert any(line.startswith("not sent:") for line in lines(app))

            await type_line(pilot, "/verify")
            await until(pilot, lambda: shown(app, "Safety number with bob (CHANGED"))
            await type_line(pilot, "/accept")
            await until(pilot, lambda: shown(app, "Safety number with bob (verified)"))
            assert not warning.has_class("visible")
            assert "⚠" not in " ".join(chat_list(app))
            await type_line(pilot, "welcome back")
            await until(pilot, lambda: texts(bob2_got) == ["welcome back"])
            # Taken back: trusted on first use again (told to our other devices).
            await type_line(pilot, "/unverify")
            await until(pilot, lambda: shown(app, "Safety number with bob (trusted on first use)"))
        finally:
            await bob2.close()


async def test_group_created_and_changed_from_the_tui(people: People) -> None:
    await people.alice.verify("bob")
    await people.alice.verify("carol")
    app = ChatApp(SdkBackend(people.alice))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app) == "")  # online
        await type_line(pilot, "/group friends bob")
        await until(pilot, lambda: "# friends" in chat_list(app))
        await until(pilot, lambda: app.current is not None and app.current.startswith("group:"))
        assert str(app.query_one("#conv-title", Static).content) == "# friends"
        await until(pilot, lambda: shown(app, "friends: members alice, bob"))
        group = app.current
        await type_line(pilot, "hello group")
        await until(pilot, lambda: "hello group" in texts(people.bob_got))
        got = next(e for e in people.bob_got if isinstance(e, Message) and e.text == "hello group")
        assert got.conversation == group
        await people.bob.send_text(group, "hi from bob")
        await until(pilot, lambda: shown(app, "bob: hi from bob"))

        await type_line(pilot, "/add carol")
        await until(pilot, lambda: shown(app, "friends: members alice, bob, carol"))
        await type_line(pilot, "/remove bob")
        await until(pilot, lambda: shown(app, "friends: members alice, carol"))
        await type_line(pilot, "after removal")
        await until(pilot, lambda: "after removal" in texts(people.carol_got))
        await asyncio.sleep(0.3)
        assert "after removal" not in texts(people.bob_got)
        await type_line(pilot, "/verify")
        await until(pilot, lambda: shown(app, "safety numbers are per user"))
    # `vox chat friends` opens the group by its name, with its history.
    again = ChatApp(SdkBackend(people.alice), open_conversation="friends")
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: again.current == group and shown(again, "you: after removal"))


async def test_leaving_a_group_from_the_tui(people: People) -> None:
    info = await people.bob.create_group("club", ["alice", "carol"])
    app = ChatApp(SdkBackend(people.alice), open_conversation=f"group:{info.group_id}")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status(app) == "" and "# club" in chat_list(app))
        await type_line(pilot, "/leave")
        await until(pilot, lambda: shown(app, "you left the group"))
        await until(pilot, lambda: "# club" not in chat_list(app))
        # The others see alice leave and stop sending to her.
        await until(pilot, lambda: people.carol.groups()[0].members == ("bob", "carol"))
        await people.bob.send_group_text(info.group_id, "without alice")
        await until(pilot, lambda: "without alice" in texts(people.carol_got))
        assert not shown(app, "without alice")
        await type_line(pilot, "back?")  # no conversation is open any more
        await until(pilot, lambda: shown(app, "No conversation is open"))
        assert pilot.app.query_one("#input", Input).value == "back?"  # the text is kept


async def test_the_tui_opens_offline_with_history_when_the_relay_is_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "relay", brand={"name": "Cached Brand"})
    async with running_relay(settings) as relay:
        alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
        await alice.config()  # the SDK caches /v1/config in the profile
        bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
        await bob.send_text("alice", "stored earlier")
        await alice.receive(wait=0.3)
        await bob.close()
    try:  # the relay is gone now
        app = ChatApp(SdkBackend(alice), open_conversation="bob")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: status(app).startswith("offline: cannot reach the relay"))
            assert re.search(r"\(retrying in \d+ s\)$", status(app))
            assert shown(app, "bob: stored earlier")
            assert app.title == "Cached Brand"
            # A reaction while offline is applied here and kept in the outbox, in order.
            earlier = next(iter(app.shown))
            await type_line(pilot, f"/react {earlier[:6]} 👍")
            await until(pilot, lambda: shown(app, "/react: queued: it is sent, in order"))
            await until(pilot, lambda: shown(app, "bob: stored earlier  👍"))
    finally:
        await alice.close()


async def test_a_queued_message_deleted_in_the_tui_says_it_reached_no_one(tmp_path: Path) -> None:
    """``/delete`` of our message still queued withdraws it: the TUI says so (as ``vox
    delete`` does), not that it was deleted for everyone, and its row goes."""
    async with running_relay(make_settings(tmp_path / "relay")) as relay:
        alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
        await alice.send_text("bob", "hello")
        await bob.close()
    try:  # the relay is gone now
        app = ChatApp(SdkBackend(alice), open_conversation="bob")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: status(app).startswith("offline: cannot reach the relay"))
            await type_line(pilot, "never sent")
            await until(pilot, lambda: shown(app, "queued: it is sent, in order"))
            draft = next(m.id for m in alice.queued() if m.text == "never sent")
            await until(pilot, lambda: draft in app.shown)
            await type_line(pilot, f"/delete {draft[:8]}")
            await until(
                pilot, lambda: shown(app, "/delete: withdrawn before sending: it reached no one")
            )
            await until(pilot, lambda: draft not in app.shown)
            assert not shown(app, "never sent") and alice.queued() == []
    finally:
        await alice.close()


async def test_a_tampered_envelope_is_reported_and_later_messages_still_show(
    relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
    await bob.close()
    try:
        await alice.send_text("bob", "one")
        await tamper_queued_payload(relay)  # flip a bit at the relay
        await alice.send_text("bob", "two")
        bob = await VoxClient.open(tmp_path / "bob")
        app = ChatApp(SdkBackend(bob), open_conversation="alice")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: shown(app, "alice: two"))
            assert shown(app, "⚠ a message from alice·1 could not be decrypted")
            assert not shown(app, "one")
    finally:
        await alice.close()
        await bob.close()

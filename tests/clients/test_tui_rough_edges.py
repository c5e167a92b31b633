"""The TUI's rough edges a gomuks or iamb user notices (issue 11), driven with Textual's pilot on
real SDK clients through a real relay on loopback."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from rich.table import Table
from textual import events
from textual.containers import VerticalScroll
from textual.widgets import Footer, Input, Static
from textual.widgets._footer import FooterKey

from clients.sdk import Message, VoxClient
from clients.tui import ChatApp, SdkBackend
from clients.tui.dates import day_label, local_day
from clients.tui.help import HelpScreen
from tests.clients import test_tui as base
from tests.clients.kit import RelayProcess
from tests.clients.test_tui import People, chat_list, lines, shown, status, type_line, until

relay = base.relay  # the fixtures, used by name
people = base.people


def pane(app: ChatApp) -> VerticalScroll:
    return app.query_one("#messages", VerticalScroll)


def at_bottom(app: ChatApp) -> bool:
    p = pane(app)
    return p.max_scroll_y > 0 and p.scroll_y >= p.max_scroll_y


async def fill(sender: VoxClient, to: str, n: int) -> None:
    for i in range(n):
        await sender.send_text(to, f"line {i:03d} " + "words " * (i % 7))


async def test_opening_a_chat_shows_the_newest_messages_and_stays_at_the_bottom(
    people: People,
) -> None:
    await fill(people.bob, "alice", 60)
    await fill(people.carol, "alice", 60)
    await newest_in_view(people, (120, 35))
    await newest_in_view(people, (110, 14))


async def newest_in_view(people: People, size: tuple[int, int]) -> None:
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: shown(app, "line 059"))
        await until(pilot, lambda: at_bottom(app))
        # Another conversation: its newest line is in view as well.
        await type_line(pilot, "/chat carol")
        await until(pilot, lambda: shown(app, "carol: line 059"))
        await until(pilot, lambda: at_bottom(app))
        # A resize keeps the bottom in view.
        await pilot.resize_terminal(80, 20)
        await pilot.pause(0.2)
        await until(pilot, lambda: at_bottom(app))
        await pilot.resize_terminal(*size)
        await until(pilot, lambda: at_bottom(app))
        # A new message follows the bottom.
        await people.carol.send_text("alice", f"the very newest {size}")
        await until(pilot, lambda: shown(app, f"the very newest {size}"))
        await until(pilot, lambda: at_bottom(app))


async def test_page_up_down_and_the_wheel_scroll_from_the_input_box(people: People) -> None:
    await fill(people.bob, "alice", 60)
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(100, 24)) as pilot:
        await until(pilot, lambda: shown(app, "line 059"))
        await until(pilot, lambda: at_bottom(app))
        assert app.focused is not None and app.focused.id == "input"
        await pilot.press("pageup")
        await until(pilot, lambda: not at_bottom(app))
        up_once = pane(app).scroll_y
        await pilot.press("pageup")
        await until(pilot, lambda: pane(app).scroll_y < up_once)
        # New messages do not yank the reader back down while scrolled up.
        await people.bob.send_text("alice", "arrives while reading")
        await until(pilot, lambda: shown(app, "arrives while reading"))
        await pilot.pause(0.2)
        assert not at_bottom(app)
        await pilot.press("pagedown", "pagedown", "pagedown", "pagedown")
        await until(pilot, lambda: at_bottom(app))
        # The wheel over the input box scrolls the conversation too.
        before = pane(app).scroll_y
        box = app.query_one("#input", Input)
        box.post_message(events.MouseScrollUp(box, 2, 1, 0, -1, 0, False, False, False))
        await until(pilot, lambda: pane(app).scroll_y < before)
        box.post_message(events.MouseScrollDown(box, 2, 1, 0, 1, 0, False, False, False))
        await until(pilot, lambda: at_bottom(app))
        # The footer says how.
        footer = app.query_one(Footer)
        keys = " ".join(str(k.key_display) for k in footer.query(FooterKey))
        assert "PgUp/PgDn" in keys


async def test_a_dropped_connection_shows_offline_and_back_online(tmp_path: Path) -> None:
    proc = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await proc.start()
    alice = await VoxClient.register(tmp_path / "a", proc.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", proc.base_url, "bob")
    try:
        await bob.send_text("alice", "before the drop")
        app = ChatApp(SdkBackend(alice), open_conversation="bob")
        async with app.run_test(size=(100, 24)) as pilot:
            await until(pilot, lambda: shown(app, "before the drop"))
            await until(pilot, lambda: alice.connected)
            proc.stop()
            await until(pilot, lambda: status(app).startswith("offline"), within=30)
            assert "retrying" in status(app)
            await proc.start()
            await until(pilot, lambda: status(app) == "back online", within=60)
            await bob.send_text("alice", "after the drop")
            await until(pilot, lambda: shown(app, "after the drop"), within=60)
    finally:
        await alice.close()
        await bob.close()
        proc.stop()


async def test_help_is_a_table_and_a_command_error_names_one_command(people: People) -> None:
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(110, 40)) as pilot:
        await until(pilot, lambda: shown(app, "No messages with bob yet"))
        await type_line(pilot, "/help")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one("#help-table", Static).content
        assert isinstance(table, Table)
        cells = [str(c) for col in table.columns for c in col.cells]
        assert "PgUp / PgDn, mouse wheel" in cells and "/send-file PATH" in cells
        assert {"/reply [ID] TEXT", "/react [ID] EMOJI", "/search TEXT", "/jump ID"} <= set(cells)
        # Drawn, not a collapsed empty box (the table is wide and tall; it scrolls).
        shown_table = app.screen.query_one("#help-table", Static)
        await until(pilot, lambda: shown_table.region.width > 60)
        assert app.screen.query_one("#help").region.height > 20
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))
        await type_line(pilot, "/group lonely")
        await until(pilot, lambda: shown(app, "usage: /group NAME USER... — create a group"))
        assert not shown(app, "/send-file")  # the one command, not the whole list


async def test_send_file_with_spaces_save_to_downloads_and_unknown_users(
    people: People, tmp_path: Path
) -> None:
    spaced = tmp_path / "my holiday photo.bin"
    spaced.write_bytes(b"x" * 3000)
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: shown(app, "No messages with bob yet"))
        await type_line(pilot, f"/send-file {spaced}")  # no quotes needed
        await until(pilot, lambda: shown(app, "you: 📎 my holiday photo.bin"))
        await type_line(pilot, f'/send-file "{spaced}"')  # quotes work too
        await until(pilot, lambda: sum("my holiday photo" in line for line in lines(app)) == 2)
        # /save without a directory: the profile's downloads folder, like `vox receive`.
        reply = tmp_path / "reply.txt"
        reply.write_bytes(b"y" * 100)
        await people.bob.send_file("alice", reply)
        await until(pilot, lambda: shown(app, "bob: 📎 reply.txt"))
        await type_line(pilot, "/save")
        assert people.alice.home is not None
        downloads = people.alice.home / "downloads"
        await until(pilot, lambda: (downloads / "reply.txt").is_file())
        assert (downloads / "reply.txt").read_bytes() == reply.read_bytes()
        # /chat with a name nobody has: said so, nothing opened.
        await type_line(pilot, "/chat nosuchuser")
        await until(pilot, lambda: shown(app, "no user or group called 'nosuchuser'"))
        assert app.current == "bob"
        assert not any("nosuchuser" in line for line in chat_list(app))


def test_day_labels() -> None:
    today = dt.date(2026, 11, 30)
    assert day_label(today, today=today) == "Today"
    assert day_label(dt.date(2026, 11, 29), today=today) == "Yesterday"
    assert day_label(dt.date(2026, 11, 27), today=today) == "Friday 27 November"
    assert day_label(dt.date(2025, 12, 31), today=today) == "31 December 2025"


async def test_date_separators_between_days(people: People) -> None:
    now = int(time.time() * 1000)
    day_ms = 86_400_000

    def msg(i: int, at: int) -> Message:
        return Message(f"{i:032x}", "bob", "bob", 1, at, at, text=f"day test {i}")

    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: shown(app, "No messages with bob yet"))
        for i, at in enumerate((now - 3 * day_ms, now - 3 * day_ms + 1, now - day_ms, now)):
            await app.handle_event(msg(i, at))
        await until(pilot, lambda: shown(app, "day test 3"))
        rows = [str(w.content) for w in app.query(".msg, .day").results(Static) if w.display]
        old = local_day(now - 3 * day_ms)
        assert [r for r in rows if r.startswith("──")] == [
            f"── {day_label(old, today=local_day(now))} ──",
            "── Yesterday ──",
            "── Today ──",
        ]
        assert (
            rows.index("── Yesterday ──")
            == rows.index(next(r for r in rows if "day test 1" in r)) + 1
        )


async def test_group_changes_say_who_did_what_to_whom(people: People) -> None:
    info = await people.bob.create_group("club", ["alice", "carol"])
    app = ChatApp(SdkBackend(people.alice), open_conversation=f"group:{info.group_id}")
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: status(app) == "" and "# club" in chat_list(app))
        await people.bob.remove_members(info.group_id, ["carol"])
        await until(pilot, lambda: shown(app, "bob removed carol"))
        await people.bob.remove_members(info.group_id, ["alice"])
        await until(pilot, lambda: shown(app, "bob removed you"))


async def test_the_sidebar_collapses_on_a_narrow_terminal(people: People) -> None:
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(50, 20)) as pilot:
        await until(pilot, lambda: shown(app, "No messages with bob yet"))
        sidebar = app.query_one("#sidebar")
        assert not sidebar.display
        assert app.query_one("#messages").region.x < 5  # the pane takes the width
        await pilot.press("ctrl+l")  # the list on demand
        await until(pilot, lambda: sidebar.display)
        await pilot.resize_terminal(100, 20)
        await until(pilot, lambda: sidebar.display and app.query_one("#messages").region.x > 20)


async def test_messages_in_other_chats_ring_and_notify_unless_turned_off(
    people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the desktop's notify-send (an outside service): records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notified.txt"
    fake = bin_dir / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{record}"\necho >> "{record}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("VOX_CHAT_NOTIFY", raising=False)
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: status(app) == "")
        await people.bob.send_text("alice", "in the open chat")
        await until(pilot, lambda: shown(app, "in the open chat"))
        await people.carol.send_text("alice", "secret words")
        await until(pilot, lambda: app.notifier.sent == [("Vox: carol", "new message")])
        await until(pilot, lambda: record.is_file() and "Vox: carol" in record.read_text())
        assert "secret words" not in record.read_text()  # never the text
    monkeypatch.setenv("VOX_CHAT_NOTIFY", "0")  # what `vox chat --no-notify` sets
    quiet = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with quiet.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: status(quiet) == "")
        await people.carol.send_text("alice", "again")
        await until(pilot, lambda: "carol (" in " ".join(chat_list(quiet)))
        assert quiet.notifier.mode == "off" and quiet.notifier.sent == []


async def test_a_new_user_is_told_how_to_start_in_one_line(people: People) -> None:
    app = ChatApp(SdkBackend(people.alice))  # no contacts, no conversation yet
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: shown(app, "Start with /chat USER|GROUP"))
        welcome = next(line for line in lines(app) if "Start with" in line)
        assert welcome.endswith("— /help lists every key and command")
        assert "/reply" not in welcome  # the full list is /help's table

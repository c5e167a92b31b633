"""Everyday messaging in the TUI (issue 11): replies, edits, deletes, reactions, disappearing
messages, search and jumping to a message — typed as commands in Alice's window (Textual's
pilot), with Bob and Carol as SDK clients, through a real relay on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from textual.containers import VerticalScroll
from textual.widgets import OptionList, Static

from clients.sdk.message_ops import run_sweeper
from clients.sdk.models import Message, MessageUpdate, ReplyRef
from clients.store.models import DeliveryState
from clients.tui import ChatApp, SdkBackend
from clients.tui.ids import IdError, resolve, short_id
from clients.tui.render import render_message
from clients.tui.rows import MessageRow, dom_id
from clients.tui.search import SearchScreen
from clients.units import format_duration
from tests.clients import test_tui as base
from tests.clients.test_tui import People, lines, shown, type_line, until

relay = base.relay  # the fixtures, used by name
people = base.people
SIZE = (120, 30)


# --- rendering and ids (pure) ----------------------------------------------------------------


def test_a_reply_shows_the_quote_above_then_edited_and_reaction_counts() -> None:
    message = Message("a" * 32, "bob", "bob", 1, 0, 0, text="yes", edited=True,
                      reactions=(("alice", "👍"), ("carol", "👍"), ("dave", "🎉")),
                      reply_to=ReplyRef("b" * 32, "alice", "lunch at noon?"))  # fmt: skip
    quote, row = render_message(message, ident="#aaaaaa", me="alice").plain.split("\n")
    assert quote == "  ↪ you #bbbbbb: lunch at noon?"
    assert row.endswith("#aaaaaa bob: yes (edited)  👍2 🎉")


def test_a_tombstone_and_a_disappearing_message() -> None:
    gone = render_message(Message("a" * 32, "bob", "bob", 1, 0, 0, deleted=True)).plain
    assert gone.endswith("🗑 this message was deleted")
    timed = render_message(Message("a" * 32, "bob", "bob", 1, 0, 0, text="hi", expires_in=30))
    assert timed.plain.endswith("hi ⏱")


def test_a_timer_change_is_a_notice_not_an_empty_message() -> None:
    set_by_bob = Message("a" * 32, "bob", "bob", 1, 0, 0, timer=3600)
    row = render_message(set_by_bob, ident="#aaaaaa").plain
    assert row.endswith(" #aaaaaa bob set disappearing messages to 1 hour")
    assert "bob:" not in row
    off = Message("a" * 32, "bob", "alice", 1, 0, 0, outgoing=True, timer=0,
                  state=DeliveryState.SENT)  # fmt: skip
    assert render_message(off).plain.endswith(" you turned off disappearing messages")


def test_durations_read_in_the_largest_whole_unit_in_words_everywhere() -> None:
    """One formatter for every surface (the TUI's title said ``1 h`` where its own timer row
    and the CLI said ``1 hour``)."""
    assert [format_duration(s) for s in (0, 30, 90, 300, 3600, 86400, 604800, 2419200)] == [
        "off", "30 seconds", "90 seconds", "5 minutes", "1 hour", "1 day", "1 week", "4 weeks",
    ]  # fmt: skip
    import clients.tui.render

    assert not hasattr(clients.tui.render, "format_duration")  # no second formatter


def test_short_ids_and_unique_prefixes() -> None:
    a, b, c = "3f9a0c" + "1" * 26, "3f9a0c" + "2" * 26, "77aa" + "0" * 28
    assert short_id(c) == "#77aa00"
    assert short_id(a, {a, b}) == "#3f9a0c1"  # longer only where two loaded ids clash
    assert resolve("#77aa", [a, b, c]) == c
    assert resolve("77AA00", [a, b, c]) == c
    assert resolve("3f9a0c2", [a, b, c]) == b
    full = "ab" * 16  # a full id (from `vox history`) not loaded in the window: passed on
    assert resolve(full, [a]) == full
    with pytest.raises(IdError, match=r"#3f9a matches 2 messages \(#3f9a0c1, #3f9a0c2\)"):
        resolve("3f9a", [a, b, c])
    with pytest.raises(IdError, match="no message #beef"):
        resolve("beef", [a, b, c])
    with pytest.raises(IdError, match="is not a message id"):
        resolve("3f9", [a])


# --- through a real relay ----------------------------------------------------------------------


def row_of(app: ChatApp, message_id: str) -> str:
    return str(app.query_one(f"#{dom_id(message_id)}", Static).content)


def updates(events: Sequence[object], kind: str) -> list[MessageUpdate]:
    return [e for e in events if isinstance(e, MessageUpdate) and e.kind == kind]


def texts_of(found: list[MessageUpdate]) -> list[str | None]:
    return [u.text for u in found]


def mine(app: ChatApp, text: str) -> str:
    """The id of our message with ``text``, once the relay accepted it."""
    return next(
        m.id
        for m in app.shown.values()
        if m.outgoing and m.text == text and not m.id.startswith("pending-")
    )


async def test_reply_edit_react_delete_and_the_timer_from_the_tui(people: People) -> None:
    question = (await people.bob.send_text("alice", "lunch at noon?")).id
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, f"#{question[:6]} bob: lunch at noon?"))
        # A reply by short id; Bob's client gets the quote.
        await type_line(pilot, f"/reply #{question[:6]} sounds good")
        await until(pilot, lambda: any(e.text == "sounds good" for e in got(people)))
        reply = next(e for e in got(people) if e.text == "sounds good")
        assert reply.reply_to == ReplyRef(question, "bob", "lunch at noon?")
        await until(pilot, lambda: shown(app, "you: sounds good"))
        mine_id = mine(app, "sounds good")
        assert row_of(app, mine_id).startswith(f"  ↪ bob #{question[:6]}: lunch at noon?\n")
        # Without an id: a reply to the newest message of the others.
        await type_line(pilot, "/reply cafe it is")  # "cafe" looks like an id, names none
        await until(pilot, lambda: any(e.text == "cafe it is" for e in got(people)))
        assert next(e for e in got(people) if e.text == "cafe it is").reply_to is not None

        # Edit our message (a 4-digit prefix is enough); Bob gets the edit, the row says so.
        await type_line(pilot, f"/edit {mine_id[:4]} sounds great")
        await until(pilot, lambda: "sounds great (edited)" in row_of(app, mine_id))
        await until(pilot, lambda: texts_of(updates(people.bob_got, "edit")) == ["sounds great"])

        # Reactions: ours and Bob's, counted; then ours taken back.
        await type_line(pilot, f"/react {question[:6]} 👍")
        await until(pilot, lambda: row_of(app, question).endswith("👍"))
        await until(pilot, lambda: [u.emoji for u in updates(people.bob_got, "reaction")] == ["👍"])
        await people.bob.react("alice", question, "👍")
        await until(pilot, lambda: row_of(app, question).endswith("👍2"))
        await type_line(pilot, f"/unreact {question[:6]}")
        await until(pilot, lambda: row_of(app, question).endswith("👍"))
        # Bob edits his question: shown at once.
        await people.bob.edit("alice", question, "lunch at one?")
        await until(pilot, lambda: "lunch at one? (edited)" in row_of(app, question))

        # Delete for everyone (ours only), for me (any).
        await type_line(pilot, f"/delete {question[:6]}")
        await until(pilot, lambda: shown(app, "/delete: only your own messages can be deleted"))
        await type_line(pilot, f"/delete {mine_id[:6]}")
        await until(pilot, lambda: "🗑 this message was deleted" in row_of(app, mine_id))
        await until(pilot, lambda: len(updates(people.bob_got, "delete")) == 1)
        await type_line(pilot, f"/delete {question[:6]} --for-me")
        await until(pilot, lambda: question not in app.shown)
        assert not any("lunch at one?" in line and "bob:" in line for line in lines(app))
        assert any(m.id == question for m in people.bob.history("alice"))  # Bob still has it

        # The disappearing timer: set here, announced, in the title; Bob turns it off.
        await type_line(pilot, "/disappear 1h")
        await until(pilot, lambda: shown(app, "you set disappearing messages to 1 hour"))
        # The title says it in the same words as the row above (and as the CLI).
        assert str(app.query_one("#conv-title", Static).content).endswith("⏱ 1 hour")
        await until(pilot, lambda: [u.seconds for u in updates(people.bob_got, "timer")] == [3600])
        await people.bob.set_timer("alice", 0)
        await until(pilot, lambda: shown(app, "bob turned off disappearing messages"))
        assert "⏱" not in str(app.query_one("#conv-title", Static).content)

        # Errors name the one command.
        for typed, said in [
            ("/edit", "usage: /edit [ID] TEXT — edit your message ID"),
            ("/react", "usage: /react [ID] EMOJI"),
            ("/delete zz", "/delete: 'zz' is not a message id"),
            ("/jump #ffffff", "/jump: no message #ffffff in this conversation"),
            ("/disappear 5x", "/disappear: bad duration '5x'"),
            ("/search", "usage: /search TEXT"),
        ]:
            await type_line(pilot, typed)
            await until(pilot, lambda said=said: shown(app, said))  # type: ignore[misc]
        assert not shown(app, "/send-file")


def got(people: People) -> list[Message]:
    return [e for e in people.bob_got if isinstance(e, Message)]


def pane(app: ChatApp) -> VerticalScroll:
    return app.query_one("#messages", VerticalScroll)


def in_view(app: ChatApp, message_id: str) -> bool:
    """The row is inside the conversation pane's visible part, and highlighted."""
    row = app.query_one(f"#{dom_id(message_id)}", MessageRow)
    top, height = pane(app).scroll_y, pane(app).scrollable_content_region.height
    y = row.virtual_region.y
    return top <= y < top + height and row.has_class("highlight")


async def test_search_opens_the_chat_at_the_message_and_a_quote_jumps_to_its_message(
    people: People,
) -> None:
    secret = (await people.bob.send_text("alice", "the password is swordfish")).id
    fillers = [(await people.bob.send_text("alice", f"filler {i}")).id for i in range(12)]
    dinner = (await people.carol.send_text("alice", "swordfish for dinner")).id
    # Until all of them are here (a 0.3 s quiet gap alone could end early on a loaded machine).
    while any(people.alice.store.get_message(m) is None for m in (secret, *fillers, dinner)):
        await people.alice.receive(wait=0.3)
    answer = (await people.alice.reply("bob", secret, "noted")).id
    app = ChatApp(SdkBackend(people.alice), open_conversation="carol")
    app.history_limit = 5  # the old message is not loaded at first
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "swordfish for dinner"))
        await type_line(pilot, "/search SWORDFISH")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen))
        results = app.screen.query_one("#search-results", OptionList)
        prompts = [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]
        assert len(prompts) == 2
        assert prompts[0].startswith("@ carol") and prompts[0].endswith(
            "carol: swordfish for dinner"
        )
        assert prompts[1].startswith("@ bob") and prompts[1].endswith(
            "bob: the password is swordfish"
        )
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.current == "bob" and secret in app.shown)
        await until(pilot, lambda: in_view(app, secret))
        assert str(app.query_one("#conv-title", Static).content) == "@ bob"

        # Back at the newest; the reply's quote jumps to the quoted message.
        await app.open_conversation("bob")
        await until(pilot, lambda: answer in app.shown and secret not in app.shown)
        await until(pilot, lambda: app.query_one(f"#{dom_id(answer)}").region.height == 2)
        assert await pilot.click(f"#{dom_id(answer)}")
        await until(pilot, lambda: secret in app.shown and in_view(app, secret))
        # /jump by the short id a quote shows, or by a full id (as `vox history` prints).
        await app.open_conversation("bob")
        await until(pilot, lambda: secret not in app.shown)
        await type_line(pilot, f"/jump {secret[:6]}")
        await until(pilot, lambda: secret in app.shown and in_view(app, secret))
        await app.open_conversation("bob")
        await until(pilot, lambda: fillers[0] not in app.shown)
        await type_line(pilot, f"/jump {fillers[0][:6]}")  # not loaded, quoted by none
        await until(pilot, lambda: shown(app, f"/jump: no message #{fillers[0][:6]}"))
        await type_line(pilot, f"/jump {fillers[0]}")
        await until(pilot, lambda: fillers[0] in app.shown and in_view(app, fillers[0]))

        await type_line(pilot, "/search nothing-like-this")
        await until(pilot, lambda: shown(app, "/search: no message matches 'nothing-like-this'"))


async def test_a_group_deletes_by_others_timer_notes_and_disappearing_rows(people: People) -> None:
    info = await people.bob.create_group("club", ["alice", "carol"])
    group = f"group:{info.group_id}"
    hello = (await people.bob.send_text(group, "club hello")).id
    oops = (await people.bob.send_text(group, "oops wrong chat")).id
    app = ChatApp(SdkBackend(people.alice), open_conversation=group)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "bob: oops wrong chat"))
        # In a group too: the reaction and the reply reach every member.
        await type_line(pilot, f"/react {hello[:6]} 👍")
        await until(pilot, lambda: len(updates(people.carol_got, "reaction")) == 1)
        reaction = updates(people.carol_got, "reaction")[0]
        assert (reaction.conversation, reaction.target, reaction.emoji) == (group, hello, "👍")
        await type_line(pilot, f"/reply {hello[:6]} hi club")
        await until(pilot, lambda: any(m.text == "hi club" for m in messages(people.carol_got)))
        answer = next(m for m in messages(people.carol_got) if m.text == "hi club")
        assert answer.conversation == group and answer.reply_to is not None
        assert answer.reply_to.id == hello
        # Bob deletes his message for everyone: a tombstone here.
        await people.bob.delete(group, oops)
        await until(pilot, lambda: "🗑 this message was deleted" in row_of(app, oops))

        # A timer set in a chat that is not open: in the list at once, announced when opened.
        await people.carol.set_timer("alice", 300)
        await until(pilot, lambda: "carol" in app.items and app.items["carol"].timer == 300)
        await type_line(pilot, "/chat carol")
        await until(pilot, lambda: shown(app, "carol set disappearing messages to 5 minutes"))
        assert str(app.query_one("#conv-title", Static).content).endswith("⏱ 5 minutes")
        # A disappearing message leaves the window when the SDK's sweep deletes it: the
        # sweeper (here on a clock an hour ahead: read 5 minutes ago is long gone) emits
        # `expired`, the TUI drops the row.
        timed = (await people.carol.send_text("alice", "this vanishes")).id
        await until(pilot, lambda: shown(app, "carol: this vanishes ⏱"))
        store = people.alice.store
        await until(
            pilot, lambda: (m := store.get_message(timed)) is not None and bool(m.expire_at)
        )
        later = asyncio.create_task(
            run_sweeper(store, clock=lambda: time.time() + 3600, emit=people.alice.emit)
        )
        try:
            await until(pilot, lambda: timed not in app.shown and not shown(app, "this vanishes"))
        finally:
            later.cancel()
        assert store.get_message(timed) is None


async def test_an_expired_event_drops_the_row_with_no_polling_of_the_store(people: People) -> None:
    """The TUI follows the SDK's `expired` events (it polled the store every second while a
    timed message was shown): the event alone removes the row, whatever the store says."""
    await people.bob.set_timer("alice", 60)
    timed = (await people.bob.send_text("alice", "gone soon")).id
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "bob: gone soon ⏱"))
        gone = MessageUpdate("expired", "bob", timed, "bob", 1, int(time.time() * 1000))
        await people.alice.emit([gone])
        await until(pilot, lambda: timed not in app.shown and not shown(app, "gone soon"))


async def test_a_timer_change_shows_once_live_and_after_reopening(people: People) -> None:
    await people.bob.send_text("alice", "hello")
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")

    def notices() -> list[str]:
        return [x for x in lines(app) if "set disappearing messages to" in x]

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: shown(app, "bob: hello"))
        await people.bob.set_timer("alice", 3600)  # the live event, and a history row
        await until(pilot, lambda: shown(app, "bob set disappearing messages to 1 hour"))
        await type_line(pilot, "/disappear 30s")  # our own: sent, and its event
        await until(pilot, lambda: shown(app, "you set disappearing messages to 30 seconds"))
        await pilot.pause(0.3)
        assert len(notices()) == 2
        await app.open_conversation("bob")  # reopened: drawn from the history alone
        await pilot.pause()
        assert shown(app, "bob: hello")
        assert [x.split(" ", 2)[2] for x in notices()] == [
            "bob set disappearing messages to 1 hour",
            "you set disappearing messages to 30 seconds",
        ]
        assert not [x for x in lines(app) if x.rstrip().endswith(("bob:", "you:"))]


def messages(events: Sequence[object]) -> list[Message]:
    return [e for e in events if isinstance(e, Message)]

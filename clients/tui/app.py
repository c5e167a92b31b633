"""The Vox chat TUI (Textual): conversation list, conversation pane, input box.

Everything goes through a :class:`~clients.tui.backend.ChatBackend` (the SDK's asyncio shell).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import shlex
import time
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.color import Color, ColorParseError
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.theme import Theme
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from clients.sdk.errors import AuthFailed, MessageQueued, UnknownUser
from clients.sdk.models import (
    DecryptFailure,
    Event,
    GroupChanged,
    KeyChanged,
    Message,
    MessageSent,
    MessageUpdate,
    ReceiptEvent,
    ReplyRef,
    SendFailed,
    ServerConfig,
    SignedOut,
    TypingEvent,
)
from clients.store.models import DeliveryState, group_conversation, is_group_conversation
from clients.tui.backend import ChatBackend, ConversationItem
from clients.tui.commands import FAILURES, MESSAGE_COMMANDS, MessageCommands
from clients.tui.dates import day_label, local_day
from clients.tui.group_text import describe_group_change
from clients.tui.help import COMMANDS, HelpScreen, usage
from clients.tui.ids import SHORT, IdError, short_id
from clients.tui.notify import Notifier, mode_from_env
from clients.tui.render import render_message
from clients.tui.rows import MessageRow, dom_id
from clients.units import format_duration, format_size

__all__ = ["BRAND_THEME", "HELP", "ChatApp"]

BRAND_THEME = "vox-brand"
TYPING_SHOW_S = 6.0
TYPING_SEND_EVERY_S = 3.0
RECONNECT_FIRST_S = 2.0
RECONNECT_MAX_S = 30.0
CONNECTION_POLL_S = 0.5
NARROW_COLUMNS = 60
BACK_ONLINE_SHOW_S = 5.0
#: The first commands a new user needs, on one line (the welcome text); ``/help`` shows all.
HELP = (
    "Start with "
    + " · ".join(c.usage for c in COMMANDS if c.name in ("/chat", "/group", "/send-file"))
    + " — /help lists every key and command"
)


class ChatApp(MessageCommands, App[None]):
    """The chat window. ``open_conversation``: a username, a group name or ``group:<id hex>``."""

    CSS_PATH = "vox.tcss"
    TITLE = "Vox"
    BINDINGS = [
        ("ctrl+q", "quit", "Quit"),
        ("ctrl+n", "next_conversation", "Next chat"),
        ("ctrl+l", "focus_list", "Chats"),
        # Scrollback works from the input box (the wheel scrolls wherever the mouse is).
        Binding(
            "pageup", "scroll_history(-1)", "Scroll", key_display="PgUp/PgDn/wheel", priority=True
        ),
        Binding("pagedown", "scroll_history(1)", "Scroll", show=False, priority=True),
        Binding("ctrl+end", "scroll_history(0)", "Newest", show=False),
    ]

    def __init__(
        self,
        backend: ChatBackend,
        *,
        open_conversation: str | None = None,
        tz: dt.tzinfo | None = None,
        notify: str | None = None,
    ) -> None:
        super().__init__()
        #: Bell and desktop notification for messages in other conversations (see
        #: :mod:`clients.tui.notify`): ``"off"``, ``"bell"``, ``"desktop"``; default from the env.
        self.notifier = Notifier(self, notify or mode_from_env())
        self.backend = backend
        self.current: str | None = None
        self.items: dict[str, ConversationItem] = {}
        self.shown: dict[str, Message] = {}
        self._initial = open_conversation
        self._tz = tz
        self._accent = "cyan"
        self._typing_timer: Timer | None = None
        self._typing_sent_at = 0.0
        self._pending = 0
        # One send at a time: typing, texts and files go out in the order the user made them.
        self._send_lock = asyncio.Lock()
        self._online = asyncio.Event()  # set once connect() was tried: sends wait for it
        self.config: ServerConfig | None = None
        self._empty_note: Static | None = None  # "no messages yet", removed by the first one
        self._offline_since: float | None = None  # monotonic time the connection dropped
        self._events_ended = False  # the backend's event stream ended (a daemon went away)
        self._last_day: dt.date | None = None  # the day of the last row (for separators)
        self._group_members: dict[str, tuple[str, ...]] = {}  # to say who joined or left
        self._devices: dict[str, set[int]] = {}  # sender -> devices seen in the open chat
        self._prefixes: dict[str, set[str]] = {}  # first SHORT digits -> loaded ids
        #: How many messages opening a conversation shows (``/jump`` and search load more).
        self.history_limit = 200

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Label("Chats", id="sidebar-title")
                yield OptionList(id="conversations")
            with Vertical(id="main"):
                yield Static("", id="conv-title")
                yield Static("", id="warning")
                yield VerticalScroll(id="messages")
                yield Static("", id="status")
                yield Input(placeholder="Type a message — /help for commands", id="input")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = f"@{self.backend.username}"
        try:
            self.apply_brand(await self.backend.server_config())
        except FAILURES as exc:
            self.notify(f"could not read the relay's config: {exc}", severity="warning")
        # Anchored: the view follows new rows and stays at the bottom across resizes, until
        # the user scrolls up (scrolling back to the end re-anchors it).
        self._chat.query_one("#messages", VerticalScroll).anchor()
        self._narrow(self.size.width)
        with contextlib.suppress(*FAILURES):
            self._group_members = {g.conversation: g.members for g in await self.backend.groups()}
        await self.reload_conversations()
        target = await self._resolve(self._initial) if self._initial else None
        if target is None and self.items:
            target = next(iter(self.items))
        if target is not None:
            await self.open_conversation(target)
        else:
            self._system(self._welcome() + HELP)
        self.pump_events()
        self._chat.query_one("#input", Input).focus()

    @property
    def _chat(self) -> Screen[object]:
        """The chat screen (under ``/help`` when that is open)."""
        return self.screen_stack[0] if self.screen_stack else self.screen

    def apply_brand(self, config: ServerConfig) -> None:
        """Title and theme colours from the relay's ``/v1/config``."""
        self.config = config
        self.title = config.name or "Vox"

        def colour(value: str | None) -> str | None:
            if not value:
                return None
            try:
                return Color.parse(value).hex
            except ColorParseError:
                return None

        primary = colour(config.primary_color) or "#4f46e5"
        background = colour(config.background_color)
        dark = Color.parse(background).brightness < 0.5 if background else True
        theme = Theme(
            name=BRAND_THEME,
            primary=primary,
            accent=colour(config.accent_color),
            background=background,
            dark=dark,
        )
        self.register_theme(theme)
        self.theme = BRAND_THEME
        self._accent = colour(config.accent_color) or primary

    def _welcome(self) -> str:
        text = self.config.welcome_text if self.config is not None else ""
        return f"{text}\n" if text else ""

    # ------------------------------------------------------------------ conversation list

    async def reload_conversations(self) -> None:
        """Refill the list from the backend (keeps a conversation opened but still empty)."""
        items = {i.conversation: i for i in await self.backend.conversation_list()}
        if self.current is not None and self.current not in items:
            items[self.current] = self.items.get(self.current) or ConversationItem(
                self.current, self.current, is_group=is_group_conversation(self.current)
            )
        if self.current is not None:  # what we are looking at is read
            items[self.current] = _replace(items[self.current], unread=0)
        self.items = items
        self._render_list()

    def _render_list(self) -> None:
        ol = self._chat.query_one("#conversations", OptionList)
        highlighted = ol.highlighted_option.id if ol.highlighted_option is not None else None
        ol.clear_options()
        ol.add_options(Option(self._item_prompt(i), id=c) for c, i in self.items.items())
        keep = self.current or highlighted
        if keep is not None and keep in self.items:
            ol.highlighted = list(self.items).index(keep)

    @staticmethod
    def _item_prompt(item: ConversationItem) -> Text:
        text = Text()
        text.append("# " if item.is_group else "@ ", style="dim")
        text.append(item.title, style="bold" if item.unread else "")
        if item.unread:
            text.append(f" ({item.unread})", style="bold reverse")
        if item.key_changed:
            text.append(" ⚠", style="bold red")
        return text

    def _bump(self, conversation: str, **changes: object) -> None:
        item = self.items.get(conversation) or ConversationItem(
            conversation, conversation, is_group=is_group_conversation(conversation)
        )
        self.items[conversation] = _replace(item, **changes)
        self._render_list()

    @on(OptionList.OptionSelected, "#conversations")
    async def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self._narrow(self.size.width)
            await self.open_conversation(event.option.id)
            self._chat.query_one("#input", Input).focus()

    def action_next_conversation(self) -> None:
        """Cycle to the next conversation."""
        if not self.items:
            return
        keys = list(self.items)
        nxt = keys[(keys.index(self.current) + 1) % len(keys)] if self.current in keys else keys[0]
        self.run_worker(self.open_conversation(nxt), group="open")

    def action_focus_list(self) -> None:
        """Move the focus to the conversation list (shown even on a narrow terminal)."""
        self._chat.query_one("#sidebar").remove_class("collapsed")
        self._chat.query_one("#conversations", OptionList).focus()

    async def _resolve(self, name: str) -> str:
        if is_group_conversation(name) or name in self.items:
            return name
        for group in await self.backend.groups():
            if group.name == name:
                return group.conversation
        return name.lower()

    # ------------------------------------------------------------------ conversation pane

    async def open_conversation(self, conversation: str, *, limit: int | None = None) -> None:
        """Show a conversation's last ``limit`` messages (:attr:`history_limit`) and mark it
        read."""
        self.current = conversation
        item = self.items.get(conversation)
        if item is None:
            item = ConversationItem(
                conversation, conversation, is_group=is_group_conversation(conversation)
            )
        self.items[conversation] = _replace(item, unread=0)
        self._render_list()
        self._show_title()
        self._show_warning(item.key_changed)
        self._set_status("")
        pane = self._chat.query_one("#messages", VerticalScroll)
        await pane.remove_children()
        self._empty_note = None
        self._last_day = None
        self.shown.clear()
        self._devices.clear()
        self._prefixes.clear()
        try:
            history = await self.backend.history(conversation, limit=limit or self.history_limit)
        except FAILURES as exc:
            self._system(f"cannot load the history: {exc}")
            history = []
        await self._merge(history)
        if not history:
            note = self._welcome() + f"No messages with {item.title} yet. /help for commands."
            self._empty_note = self._system(note)
        self._follow()
        self._mark_read(conversation)

    def _show_title(self) -> None:
        """``@ bob`` or ``# weekend``, and the disappearing timer when one is set."""
        item = self.items.get(self.current or "")
        title = Text()
        if item is not None:
            title.append(("# " if item.is_group else "@ ") + item.title, style="bold")
            if item.timer:
                title.append(f"  ⏱ {format_duration(item.timer)}", style="dim")
        self._chat.query_one("#conv-title", Static).update(title)

    def _show_warning(self, on: bool) -> None:
        warning = self._chat.query_one("#warning", Static)
        if on and self.current is not None:
            warning.update(
                Text(
                    f"⚠ {self.current}'s safety number changed. Sending is blocked: "
                    "compare it with /verify, then /accept.",
                    style="bold",
                )
            )
        warning.set_class(on, "visible")

    async def _merge(self, messages: list[Message]) -> None:
        """Add new messages of the open conversation as rows; redraw changed ones (an edit,
        a reaction, a tombstone, a later delivery state — never an earlier one)."""
        pane = self._chat.query_one("#messages", VerticalScroll)
        new: list[Static | Message] = []  # day separators, and messages (drawn below)
        redraw: set[str] = set()
        for m in messages:
            if m.conversation != self.current:
                continue
            old = self.shown.get(m.id)
            if old is not None:
                if old.state.rank > m.state.rank:
                    m = dataclasses.replace(m, state=old.state)
                if m != old:
                    self._update_row(m)
                continue
            self.shown[m.id] = m
            redraw |= self._learn(m)
            day = local_day(m.sent_at, tz=self._tz)
            if day != self._last_day:
                self._last_day = day
                today = dt.datetime.now(tz=self._tz).date()
                new.append(Static(Text(f"── {day_label(day, today=today)} ──"), classes="day"))
            new.append(m)
        # Drawn once everything is learned (a second device of a sender later in the batch).
        rows = [MessageRow(w, self._render(w)) if isinstance(w, Message) else w for w in new]
        for mid in redraw - {w.id for w in new if isinstance(w, Message)}:
            self._update_row(self.shown[mid])
        if rows:
            if self._empty_note is not None:
                await self._empty_note.remove()
                self._empty_note = None
            await pane.mount_all(rows)

    def _learn(self, m: Message) -> set[str]:
        """Note ``m``'s sender device and short id; returns the ids of rows to redraw (the
        sender's earlier rows when a second device of theirs shows up, rows whose short id
        became ambiguous)."""
        redraw: set[str] = set()
        if not m.outgoing and m.device:
            devices = self._devices.setdefault(m.sender, set())
            if m.device not in devices:
                devices.add(m.device)
                if len(devices) == 2:
                    redraw |= {i for i, s in self.shown.items() if s.sender == m.sender}
        if not m.id.startswith("pending-"):
            same = self._prefixes.setdefault(m.id[:SHORT], set())
            same.add(m.id)
            if len(same) > 1:
                redraw |= same
        return redraw

    def _render(self, m: Message) -> Text:
        if m.outgoing:  # our own other device: say which
            show_device = m.device not in (0, self.backend.device_id)
        else:  # a user writing from several devices in this conversation
            show_device = len(self._devices.get(m.sender, ())) > 1
        clashing = self._prefixes.get(m.id[:SHORT], ())
        ident = "" if m.id.startswith("pending-") else short_id(m.id, clashing)
        return render_message(
            m, accent=self._accent, tz=self._tz, ident=ident, show_device=show_device,
            me=self.backend.username,
        )  # fmt: skip

    def _update_row(self, m: Message) -> None:
        self.shown[m.id] = m
        for row in self._chat.query(f"#{dom_id(m.id)}").results(MessageRow):
            row.show(m, self._render(m))

    def _system(self, text: str) -> Static:
        pane = self._chat.query_one("#messages", VerticalScroll)
        line = Static(Text(text), classes="system")
        pane.mount(line)
        self._follow()
        return line

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        """The wheel over the input box, the status line, ...: scrolls the conversation."""
        self._chat.query_one("#messages", VerticalScroll).scroll_relative(y=-3, animate=False)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        """See :meth:`on_mouse_scroll_up`."""
        self._chat.query_one("#messages", VerticalScroll).scroll_relative(y=3, animate=False)

    def on_resize(self, event: events.Resize) -> None:
        """Below :data:`NARROW_COLUMNS` columns the conversation list hides (Ctrl+L shows it)."""
        self._narrow(event.size.width)

    def _narrow(self, width: int) -> None:
        self._chat.query_one("#sidebar").set_class(width < NARROW_COLUMNS, "collapsed")

    def _follow(self) -> None:
        """Show the newest rows: re-anchor the pane to its end (after the next layout)."""
        self._chat.query_one("#messages", VerticalScroll).anchor()

    def action_scroll_history(self, pages: int) -> None:
        """PageUp (-1) / PageDown (+1) / Ctrl+End (0: the newest) in the conversation."""
        pane = self._chat.query_one("#messages", VerticalScroll)
        if pages < 0:
            pane.scroll_page_up(animate=False)
        elif pages > 0:
            pane.scroll_page_down(animate=False)
        else:
            self._follow()

    def _signed_out(self, reason: str) -> None:
        self._set_status(f"signed out: {reason}")
        self._online.set()  # sends go ahead and fail with the same clear message
        self.notify(reason, title="signed out", severity="error", timeout=30)

    def _set_status(self, text: str) -> None:
        self._chat.query_one("#status", Static).update(Text(text))

    @work(group="read", exit_on_error=False)
    async def _mark_read(self, conversation: str) -> None:
        try:
            await self.backend.mark_read(conversation)
        except FAILURES as exc:
            self.log.warning(f"mark_read failed: {exc}")

    # ------------------------------------------------------------------ events

    @work(group="events", exclusive=True, exit_on_error=False)
    async def pump_events(self) -> None:
        """Apply every SDK event to the screen until the stream ends."""
        delay = RECONNECT_FIRST_S
        self._set_status("connecting…")
        while True:
            try:
                await self.backend.connect()
            except AuthFailed as exc:  # removed from the account, revoked: retrying cannot help
                self._signed_out(str(exc))
                return
            except FAILURES as exc:
                self._set_status(f"offline: {exc} (retrying in {delay:.0f} s)")
                self._online.set()  # sends go ahead and fail with a clear message
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            self._set_status("")
            self._online.set()
            break
        self._watch_connection()
        # Whatever arrived before we subscribed is in the store: catch up once.
        await self.reload_conversations()
        if self.current is not None:
            await self._sync(self.current, limit=200)
            self._mark_read(self.current)
        try:
            async for event in self.backend.events():
                try:
                    await self.handle_event(event)
                except Exception as exc:  # one bad event never stops the window
                    self.log.error(f"cannot show {type(event).__name__}: {exc!r}")
                    self.notify(f"cannot show an event: {type(exc).__name__}", severity="error")
            reason = "the vox daemon stopped — quit and start vox chat again"
        except FAILURES as exc:
            reason = str(exc)
        self._events_ended = True  # the connection state no longer matters
        self._set_status(f"disconnected: {reason}")
        self.notify(f"disconnected: {reason}", severity="error", timeout=30)

    def _watch_connection(self) -> None:
        """Poll the backend's ``connected`` and show drops at once: ``offline — reconnecting
        (N s)`` while down, ``back online`` when it is up again. The SDK (or the daemon)
        reconnects by itself (backoff up to 1 s); the status only reports it."""
        self.set_interval(CONNECTION_POLL_S, self._check_connection)

    def _check_connection(self) -> None:
        if not self.is_running or self._events_ended:
            return
        up = self.backend.connected
        try:
            status = str(self._chat.query_one("#status", Static).content)
        except NoMatches:  # shutting down
            return
        if not up:
            now = time.monotonic()
            if self._offline_since is None:
                self._offline_since = now
                self.notify("connection to the relay lost — reconnecting", severity="warning")
            down_for = now - self._offline_since
            self._set_status(
                f"offline — the relay is unreachable, retrying every second ({down_for:.0f} s)"
            )
        elif self._offline_since is not None:
            self._offline_since = None
            self._set_status("back online")
            self.notify("back online")
            self.set_timer(BACK_ONLINE_SHOW_S, self._clear_back_online)
        elif status.startswith("offline"):
            self._set_status("")

    def _clear_back_online(self) -> None:
        if str(self._chat.query_one("#status", Static).content) == "back online":
            self._set_status("")

    async def handle_event(self, event: Event) -> None:
        """One SDK event."""
        if isinstance(event, Message):
            if event.conversation == self.current:
                await self._merge([event])
                if not event.outgoing:
                    self._clear_typing()
                    self._mark_read(event.conversation)
            elif not event.outgoing:
                item = self.items.get(event.conversation)
                self._bump(event.conversation, unread=(item.unread if item else 0) + 1)
                title = self.items[event.conversation].title
                where = "" if title == event.sender else f" in {title}"
                self.notifier.notify(f"Vox: {event.sender}", f"new message{where}")
            elif event.conversation not in self.items:
                await self.reload_conversations()
        elif isinstance(event, ReceiptEvent):
            for mid in event.message_ids:
                shown = self.shown.get(mid)
                if shown is not None and shown.outgoing and event.kind.rank > shown.state.rank:
                    self._update_row(_replace_msg(shown, event.kind))
        elif isinstance(event, TypingEvent):
            if event.conversation == self.current and event.sender != self.backend.username:
                if event.active:
                    self._set_status(f"{event.sender} is typing…")
                    if self._typing_timer is not None:
                        self._typing_timer.stop()
                    self._typing_timer = self.set_timer(TYPING_SHOW_S, self._clear_typing)
                else:
                    self._clear_typing()
        elif isinstance(event, MessageSent):  # a queued message went out: "…" becomes "✓"
            shown = self.shown.get(event.message_id)
            if shown is not None and DeliveryState.SENT.rank > shown.state.rank:
                self._update_row(_replace_msg(shown, DeliveryState.SENT))
            if event.target is not None and event.target in self.shown:  # "edit queued" goes
                await self._refresh(event.conversation, {event.target})
        elif isinstance(event, SendFailed):  # a queued message or operation reached no one
            await self._send_failed(event)
        elif isinstance(event, MessageUpdate):
            await self._message_update(event)
        elif isinstance(event, SignedOut):
            self._signed_out(event.reason)
        elif isinstance(event, KeyChanged):
            self._bump(event.username, key_changed=True)
            if self.current == event.username:
                self._show_warning(True)
            self.notify(
                f"{event.username}'s safety number changed — /verify and /accept",
                severity="warning",
                timeout=10,
            )
        elif isinstance(event, GroupChanged):
            conversation = group_conversation(event.group_id)
            before = self._group_members.get(conversation)
            self._group_members[conversation] = event.members
            text = describe_group_change(event, before, self.backend.username)
            await self.reload_conversations()
            if self.current == conversation:
                self._system(text)
            elif self.backend.username not in event.members or event.action == "create":
                self.notify(f"{event.name}: {text}")
        elif isinstance(event, DecryptFailure):
            text = (
                f"⚠ a message from {event.sender}·{event.device} could not be decrypted "
                f"({event.error})"
            )
            self.notify(text, severity="error")
            if self.current == event.sender:
                self._system(text)

    async def _send_failed(self, event: SendFailed) -> None:
        """A queued message turns "✗ not sent"; the message a queued edit, delete or reaction
        changed says that one was not sent (its local effect stays); the reason is shown."""
        shown = self.shown.get(event.message_id)
        if shown is not None and DeliveryState.FAILED.rank > shown.state.rank:
            self._update_row(_replace_msg(shown, DeliveryState.FAILED))
        if event.target is not None and event.target in self.shown:
            await self._refresh(event.conversation, {event.target})
        what = "message" if event.kind in ("text", "file") else event.kind
        text = f"✗ {what} not sent: {event.reason}"
        if event.conversation == self.current:
            self._system(text)
        else:
            self.notify(f"{self._chat_label(event.conversation)}: {text}", severity="error")

    async def _message_update(self, event: MessageUpdate) -> None:
        """An edit, delete or reaction redraws its message; a timer change is shown in the
        title (its announcement is a history row: drawn now in the open chat, else on open); a
        message that disappeared (the SDK's ``expired`` event) leaves the pane — no polling."""
        if event.kind == "timer":
            await self._timer_changed(event.conversation, event.seconds or 0)
        elif event.kind == "expired":  # the SDK's sweep deleted it: the row goes at once
            if event.conversation == self.current and event.target in self.shown:
                await self._drop(event.target)
        elif event.conversation == self.current and event.target in self.shown:
            await self._refresh(event.conversation, {event.target})

    async def _timer_changed(self, conversation: str, seconds: int) -> None:
        """The title shows the new timer; the open chat draws the announcement row from the
        store (once: our own change and its event both land here, and a row is drawn once)."""
        self._bump(conversation, timer=seconds)
        if conversation == self.current:
            self._show_title()
            await self._sync(conversation)

    async def _refresh(self, conversation: str, ids: set[str]) -> None:
        """Redraw the rows of ``ids`` from the store; rows of messages gone from it (deleted
        on this device, disappeared) are removed."""
        history = await self.backend.history(conversation, limit=max(200, len(self.shown) + 50))
        if conversation != self.current:
            return
        found = {m.id: m for m in history if m.id in ids}
        for mid in ids:
            if mid in found:
                self._update_row(found[mid])
            elif mid in self.shown:
                await self._drop(mid)

    def _clear_typing(self) -> None:
        status = self._chat.query_one("#status", Static)
        if str(status.content).endswith("is typing…"):
            status.update("")

    # ------------------------------------------------------------------ input

    @on(Input.Changed, "#input")
    def _typing(self, event: Input.Changed) -> None:
        if self.current is None:
            return
        if not event.value:
            # The draft was cleared: "stopped" at once, not the receiver's expiry later.
            if self._typing_sent_at:
                self._typing_sent_at = 0.0
                self._send_typing(self.current, active=False)
            return
        if event.value.startswith("/"):
            return
        now = time.monotonic()
        if now - self._typing_sent_at >= TYPING_SEND_EVERY_S:
            self._typing_sent_at = now
            self._send_typing(self.current)

    @work(group="typing", exit_on_error=False)
    async def _send_typing(self, conversation: str, active: bool = True) -> None:
        if self._send_lock.locked() or not self._online.is_set():
            return  # typing is best effort: never queue it behind a message
        async with self._send_lock:
            with contextlib.suppress(*FAILURES):
                await self.backend.send_typing(conversation, active)

    @on(Input.Submitted, "#input")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.clear()
        self._typing_sent_at = 0.0
        if not text:
            return
        if text.startswith("/"):
            await self.run_command(text)
            return
        if self.current is None:
            event.input.value = text  # kept: nothing was sent
            self._system("No conversation is open: /chat USERNAME (or Ctrl+L), then Enter again")
            return
        self._send_text(self.current, text)

    async def run_command(self, line: str) -> None:
        """Run a ``/command`` typed in the input box (see :mod:`clients.tui.help`)."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            args = shlex.split(rest)
        except ValueError:
            args = rest.split()  # an unbalanced quote: the raw words (a path takes the rest)
        if name in ("/quit", "/exit"):
            self.exit()
        elif name == "/help":
            self.push_screen(HelpScreen())
        elif name in ("/chat", "/open") and len(args) == 1:
            await self._open_checked(args[0])
        elif name in ("/send-file", "/file") and rest and self.current is not None:
            path = _existing_file(rest, args)
            if path is None:
                self._system(f"no such file: {rest}")
            else:
                self._send_file(self.current, path)
        elif name in ("/verify", "/accept", "/unverify") and self.current is not None:
            if is_group_conversation(self.current):
                self._system("safety numbers are per user: open a direct conversation")
            else:
                self._verify(self.current, accept=name == "/accept", clear=name == "/unverify")
        elif name == "/save" and len(args) <= 1 and self.current is not None:
            received = [m for m in self.shown.values() if m.attachment and not m.outgoing]
            if not received:
                self._system("no received file in this conversation")
            else:
                self._save(received[-1], self._downloads(args[0] if args else None))
        elif name == "/group" and len(args) >= 2:
            self._group_change("create", args[0], args[1:])
        elif name in ("/add", "/remove", "/leave") and self.current is not None:
            if not is_group_conversation(self.current):
                self._system(f"{name} works in a group conversation")
            elif name == "/leave":
                self._group_change("leave", self.current, [])
            elif args:
                self._group_change(name[1:], self.current, args)
            else:
                self._system(usage(name))
        elif name == "/search" and rest:
            self._search(rest)
        elif name in MESSAGE_COMMANDS and self.current is not None:
            try:
                await self._message_command(name, self.current, rest, args)
            except IdError as exc:
                self._system(f"{name}: {exc}")
        elif self.current is None and name in _NEEDS_CONVERSATION:
            self._system(f"{name} works in an open conversation: /chat USER|GROUP first")
        else:
            self._system(usage(name))

    @on(MessageRow.QuoteClicked)
    async def _quote_clicked(self, event: MessageRow.QuoteClicked) -> None:
        await self.jump_to(event.conversation, event.message_id)
        self._chat.query_one("#input", Input).focus()  # the click focused the pane: type on

    async def _open_checked(self, name: str) -> None:
        """``/chat NAME``: a group, a known contact, or a user the relay knows — not a typo."""
        target = await self._resolve(name)
        if not is_group_conversation(target) and target not in self.items:
            try:
                await self.backend.verify(target)
            except UnknownUser:
                if self.backend.connected:
                    self._system(f"no user or group called {name!r} on this relay")
                    return
            except FAILURES:
                pass  # offline: open it; sending says what is wrong
        await self.open_conversation(target)

    def _downloads(self, arg: str | None) -> Path:
        """Where ``/save`` writes: ``DIR`` if given, else the profile's ``downloads`` folder
        (as ``vox receive``), created on demand."""
        if arg:
            return _user_path(arg)
        home = self.backend.home
        target = home / "downloads" if home is not None else Path("downloads")
        target.mkdir(parents=True, exist_ok=True)
        return target

    @work(group="send", exit_on_error=False)
    async def _send_text(self, conversation: str, text: str, reply_to: str | None = None) -> None:
        quoted = self.shown.get(reply_to) if reply_to else None
        self._pending += 1
        placeholder = Message(
            id=f"pending-{self._pending}",
            conversation=conversation,
            sender=self.backend.username,
            device=0,
            sent_at=int(time.time() * 1000),
            received_at=0,
            text=text,
            outgoing=True,
            state=DeliveryState.PENDING,
            reply_to=None if quoted is None else _quote(quoted),
        )
        await self._merge([placeholder])
        self._follow()
        try:
            await self._online.wait()
            async with self._send_lock:
                if reply_to:
                    await self.backend.reply(conversation, reply_to, text)
                else:
                    await self.backend.send_text(conversation, text)
        except MessageQueued:
            # Kept in the outbox: the sync below shows it "…" until a MessageSent event.
            self._system("queued: it is sent, in order, when the relay is reachable")
        except FAILURES as exc:
            self._system(f"not sent: {exc}")
        finally:
            await self._drop(placeholder.id)
        await self._sync(conversation)

    async def _drop(self, message_id: str) -> None:
        self.shown.pop(message_id, None)
        await self._chat.query(f"#{dom_id(message_id)}").remove()

    async def _sync(self, conversation: str, *, limit: int = 50) -> None:
        if conversation == self.current:
            await self._merge(await self.backend.history(conversation, limit=limit))

    @work(group="send", exit_on_error=False)
    async def _send_file(self, conversation: str, path: Path) -> None:
        name = _file_label(path)

        def progress(done: int, total: int) -> None:
            pct = 100 * done // total if total else 100
            self._set_status(f"sending {name}: {pct}%")

        self._set_status(f"sending {name}…")
        try:
            await self._online.wait()
            async with self._send_lock:
                await self.backend.send_file(conversation, path, progress)
        except FAILURES as exc:
            self._set_status("")
            self._system(f"file not sent: {exc}")
            return
        self._set_status(f"sent {name}")
        await self._sync(conversation)

    @work(group="save", exit_on_error=False)
    async def _save(self, message: Message, dest: Path) -> None:
        name = message.attachment.file_name if message.attachment else "file"

        def progress(done: int, total: int) -> None:
            self._set_status(f"saving {name}: {100 * done // total if total else 100}%")

        try:
            path = await self.backend.download(message, dest, progress)
        except FAILURES as exc:
            self._set_status("")
            self._system(f"file not saved: {exc}")
            return
        self._set_status("")
        if message.attachment is not None and message.id in self.shown:
            saved = dataclasses.replace(message.attachment, path=path)
            self._update_row(dataclasses.replace(message, attachment=saved))
        self._system(f"saved {name} to {path}")

    @work(group="send", exit_on_error=False)
    async def _group_change(self, action: str, group: str, users: list[str]) -> None:
        try:
            await self._online.wait()
            async with self._send_lock:
                if action == "create":
                    info = await self.backend.create_group(group, users)
                elif action == "add":
                    info = await self.backend.add_members(group, users)
                elif action == "leave":
                    await self.backend.leave_group(group)
                else:
                    info = await self.backend.remove_members(group, users)
        except FAILURES as exc:
            self._system(f"group not changed: {exc}")
            return
        if action == "leave":
            if self.current == group:  # the pane stays as it was; the group leaves the list
                self.current = None
                self._chat.query_one("#conv-title", Static).update("")
            await self.reload_conversations()
            self._system("you left the group: you receive nothing more from it")
            return
        self._group_members[info.conversation] = info.members
        await self.reload_conversations()
        if action == "create":
            await self.open_conversation(info.conversation)
        self._system(f"{info.name}: members {', '.join(info.members)}")


def _replace(item: ConversationItem, **changes: object) -> ConversationItem:
    return dataclasses.replace(item, **changes)  # type: ignore[arg-type]


def _replace_msg(m: Message, state: DeliveryState) -> Message:
    return dataclasses.replace(m, state=state)


def _quote(m: Message) -> ReplyRef:
    """What a reply to ``m`` quotes (shown until the sent reply replaces the placeholder)."""
    name = m.attachment.file_name if m.attachment is not None else ""
    return ReplyRef(m.id, m.sender, (m.text or name)[:60])


def _existing_file(rest: str, args: list[str]) -> Path | None:
    """The file ``/send-file`` means: the quoted or escaped path, or the rest of the line as
    typed (a path with spaces needs no quotes)."""
    for candidate in ([args[0]] if len(args) == 1 else []) + [rest]:
        path = Path(candidate).expanduser()
        if path.is_file():
            return path
    return None


_NEEDS_CONVERSATION = (
    frozenset(
        {
            "/send-file",
            "/file",
            "/verify",
            "/accept",
            "/unverify",
            "/save",
            "/add",
            "/remove",
            "/leave",
        }
    )
    | MESSAGE_COMMANDS
)


def _file_label(path: Path) -> str:
    """``name (12.7 KiB)``: the file's own size, as the conversation shows it."""
    try:
        return f"{path.name} ({format_size(path.stat().st_size)})"
    except OSError:
        return path.name


def _user_path(arg: str) -> Path:
    return Path(arg).expanduser()

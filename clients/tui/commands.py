"""The TUI's message commands (``/reply``, ``/edit``, ``/delete``, ``/react``, ``/unreact``,
``/disappear``, ``/jump``, ``/search``, ``/verify``, ``/accept``, ``/unverify``): the
:class:`MessageCommands` half of :class:`~clients.tui.app.ChatApp`, which dispatches the typed
line (:meth:`~clients.tui.app.ChatApp.run_command`) and holds the state they use.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING

from textual import work
from textual.containers import VerticalScroll

from clients.sdk.errors import ClientError, MessageQueued
from clients.sdk.message_ops import parse_duration
from clients.sdk.models import Message
from clients.store.errors import StoreError as LocalStoreError
from clients.store.models import is_group_conversation
from clients.tui.help import usage
from clients.tui.ids import SHORT, IdError, looks_like_id, resolve
from clients.tui.rows import MessageRow, dom_id
from clients.tui.search import SearchScreen, result_prompt
from clients.units import withdrawn_notice

if TYPE_CHECKING:
    import asyncio

    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Static
    from textual.worker import Worker

    from clients.tui.backend import ChatBackend, ConversationItem

    _AppBase = App[None]
else:
    _AppBase = object

__all__ = ["FAILURES", "MESSAGE_COMMANDS", "MessageCommands"]

#: What the SDK (and the store beneath it) raise; shown in the window, never a traceback.
FAILURES = (ClientError, LocalStoreError)
HIGHLIGHT_S = 3.0
#: ``/jump`` and a search result load this much more history at a time, up to the maximum.
JUMP_HISTORY_STEP, JUMP_HISTORY_MAX = 500, 5000
MESSAGE_COMMANDS = frozenset(
    {"/reply", "/edit", "/delete", "/react", "/unreact", "/disappear", "/jump"}
)


class MessageCommands(_AppBase):
    """The message commands, mixed into :class:`~clients.tui.app.ChatApp` (a plain mixin at
    run time; what it uses of the app is declared here for the type checker)."""

    if TYPE_CHECKING:
        backend: ChatBackend
        current: str | None
        items: dict[str, ConversationItem]
        shown: dict[str, Message]
        _tz: dt.tzinfo | None
        _send_lock: asyncio.Lock
        _online: asyncio.Event

        @property
        def _chat(self) -> Screen[object]: ...
        def _system(self, text: str) -> Static: ...
        def _bump(self, conversation: str, **changes: object) -> None: ...
        def _show_warning(self, on: bool) -> None: ...
        async def open_conversation(
            self, conversation: str, *, limit: int | None = None
        ) -> None: ...
        async def _timer_changed(self, conversation: str, seconds: int) -> None: ...
        async def _refresh(self, conversation: str, ids: set[str]) -> None: ...
        def _send_text(
            self, conversation: str, text: str, reply_to: str | None = None
        ) -> Worker[None]: ...

    async def _message_command(
        self, name: str, conversation: str, rest: str, args: list[str]
    ) -> None:
        """``/reply``, ``/edit``, ``/delete``, ``/react``, ``/unreact``, ``/disappear``,
        ``/jump`` in the open conversation (see :mod:`clients.tui.help`)."""
        flags = {a for a in args if a.startswith("--")}
        words = [a for a in args if not a.startswith("--")]
        if name in ("/reply", "/edit"):
            target, text = self._target_and_text(rest, mine=name == "/edit")
            if not text:
                self._system(usage(name))
            elif target is None:
                self._system(f"{name}: no message to {name[1:]}")
            elif name == "/reply":
                self._send_text(conversation, text, reply_to=target)
            else:
                self._operate(name, conversation, target, text=text)
        elif name == "/delete" and len(words) == 1 and flags <= {"--for-me"}:
            target = self._message_id(words[0])
            self._operate(name, conversation, target, for_me="--for-me" in flags)
        elif name in ("/react", "/unreact") and len(words) <= 2 and flags <= {"--remove"}:
            await self._react_command(name, conversation, words, remove="--remove" in flags)
        elif name == "/disappear" and len(args) == 1:
            try:
                seconds = parse_duration(args[0])
            except ClientError as exc:
                self._system(f"/disappear: {exc}")
                return
            self._operate(name, conversation, "", seconds=seconds)
        elif name == "/jump" and len(words) == 1:
            await self.jump_to(conversation, self._message_id(words[0]))
        else:
            self._system(usage(name))

    async def _react_command(
        self, name: str, conversation: str, words: list[str], *, remove: bool
    ) -> None:
        """``/react ID EMOJI``, ``/react EMOJI`` (the newest message of the others),
        ``/react ID --remove``, ``/unreact [ID]``."""
        remove = remove or name == "/unreact"
        if remove and len(words) <= 1:
            given, emoji = (words[0] if words else None), ""
        elif not remove and len(words) == 2:
            given, emoji = words
        elif not remove and len(words) == 1 and not looks_like_id(words[0]):
            given, emoji = None, words[0]
        else:
            self._system(usage(name))
            return
        target = self._message_id(given) if given else self._last(mine=False)
        if target is None:
            self._system(f"{name}: no message to react to")
        else:
            self._operate(name, conversation, target, emoji=emoji, remove=remove)

    def _message_id(self, typed: str) -> str:
        """The message id a (short) id typed in a command means (:mod:`clients.tui.ids`): a
        message loaded in the pane, or one a loaded reply quotes."""
        ids = {i for i in self.shown if not i.startswith("pending-")}
        ids |= {m.reply_to.id for m in self.shown.values() if m.reply_to is not None}
        return resolve(typed, ids)

    def _last(self, *, mine: bool) -> str | None:
        """The newest message of ours (``mine``: edit) or of the others (reply, react)."""
        for m in sorted(self.shown.values(), key=lambda m: m.sent_at, reverse=True):
            usable = not m.deleted and not m.id.startswith("pending-")
            if usable and m.outgoing == mine and (not mine or m.text is not None):
                return m.id
        return None

    def _target_and_text(self, rest: str, *, mine: bool) -> tuple[str | None, str]:
        """``ID TEXT`` or just ``TEXT`` (then the newest message, see :meth:`_last`). A first
        word that looks like an id but names no message is text, unless it starts with ``#``."""
        first, _, text = rest.partition(" ")
        if looks_like_id(first):
            try:
                return self._message_id(first), text.strip()
            except IdError:
                if first.startswith("#"):
                    raise
        return self._last(mine=mine), rest

    @work(group="send", exit_on_error=False)
    async def _operate(
        self, name: str, conversation: str, target: str, *, text: str = "",
        emoji: str = "", remove: bool = False, for_me: bool = False, seconds: int = 0,
    ) -> None:  # fmt: skip
        """Send an edit, delete, reaction or timer change; redraw what it changed."""
        try:
            await self._online.wait()
            async with self._send_lock:
                if name == "/edit":
                    await self.backend.edit(conversation, target, text)
                elif name == "/delete":
                    withdrawn = await self.backend.delete(conversation, target, for_me=for_me)
                    if withdrawn is not None:
                        self._system(f"{name}: {withdrawn_notice(withdrawn.timer)}")
                        if withdrawn.timer is not None:  # the change undone: the title too
                            await self._timer_changed(conversation, withdrawn.timer)
                elif name == "/disappear":
                    await self.backend.set_timer(conversation, seconds)
                else:
                    await self.backend.react(conversation, target, emoji, remove=remove)
        except MessageQueued:  # applied here already; kept and sent in order later
            self._system(f"{name}: queued: it is sent, in order, when the relay is reachable")
        except FAILURES as exc:
            self._system(f"{name}: {exc}")
            return
        if name == "/disappear":
            await self._timer_changed(conversation, seconds)
        elif conversation == self.current:
            await self._refresh(conversation, {target})

    @work(group="search", exclusive=True, exit_on_error=False)
    async def _search(self, query: str) -> None:
        """``/search TEXT``: the results as a list; the one chosen opens at that message."""
        try:
            found = await self.backend.search(query)
        except FAILURES as exc:
            self._system(f"/search: {exc}")
            return
        if not found:
            self._system(f"/search: no message matches {query!r}")
            return
        today = dt.datetime.now(tz=self._tz).date()
        prompt = functools.partial(
            result_prompt, words=query.split(), me=self.backend.username, today=today, tz=self._tz
        )
        prompts = [prompt(m, chat=self._chat_label(m.conversation)) for m in found]

        def chosen(message: Message | None) -> None:
            if message is not None:
                self.run_worker(self.jump_to(message.conversation, message.id), group="open")

        self.push_screen(SearchScreen(query, found, prompts), chosen)

    def _chat_label(self, conversation: str) -> str:
        item = self.items.get(conversation)
        title = item.title if item is not None else conversation
        return ("# " if is_group_conversation(conversation) else "@ ") + title

    async def jump_to(self, conversation: str, message_id: str) -> None:
        """Open ``conversation`` (loading older history as needed) with ``message_id`` in view
        and highlighted for a moment."""
        if conversation != self.current:
            await self.open_conversation(conversation)
        while message_id not in self.shown and len(self.shown) < JUMP_HISTORY_MAX:
            loaded = len(self.shown)
            await self.open_conversation(conversation, limit=loaded + JUMP_HISTORY_STEP)
            if len(self.shown) <= loaded:
                break  # that was all of it
        row = next(iter(self._chat.query(f"#{dom_id(message_id)}").results(MessageRow)), None)
        if row is None:
            self._system(
                f"/jump: message #{message_id[:SHORT]} is not among this conversation's "
                f"{JUMP_HISTORY_MAX} newest messages"
            )
            return
        self._chat.query_one("#messages", VerticalScroll).scroll_to_widget(
            row, animate=False, center=True
        )
        row.add_class("highlight")
        self.set_timer(HIGHLIGHT_S, lambda: row.remove_class("highlight"))

    @work(group="verify", exit_on_error=False)
    async def _verify(self, username: str, *, accept: bool, clear: bool = False) -> None:
        try:
            if accept:
                v = await self.backend.accept_identity(username)
            elif clear:
                v = await self.backend.clear_identity(username)
            else:
                v = await self.backend.verify(username)
        except FAILURES as exc:
            self._system(str(exc))
            return
        if accept:
            self._bump(username, key_changed=False)
            if self.current == username:
                self._show_warning(False)
        state = (
            "CHANGED — not accepted"
            if v.key_changed
            else ("verified" if v.verified else "trusted on first use")
        )
        self._system(f"Safety number with {username} ({state}):\n{v.safety_number}")

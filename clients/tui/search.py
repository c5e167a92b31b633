"""``/search TEXT``: the results of a local history search as a list over the chat (a modal
screen); Enter on a result opens its conversation at that message, Esc closes the list."""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from clients.sdk.models import Message
from clients.tui.dates import day_label, local_day
from clients.tui.render import format_time

__all__ = ["SearchScreen", "result_prompt"]


def result_prompt(
    message: Message,
    *,
    chat: str,
    words: list[str],
    me: str,
    today: dt.date,
    tz: dt.tzinfo | None = None,
) -> Text:
    """``@ bob  Today 09:05  bob: lunch at noon?`` with the searched words highlighted."""
    line = Text()
    line.append(f"{chat}  ", style="bold")
    day = day_label(local_day(message.sent_at, tz=tz), today=today)
    line.append(f"{day} {format_time(message.sent_at, tz=tz)}  ", style="dim")
    line.append("you" if message.outgoing or message.sender == me else message.sender)
    line.append(": ")
    body = Text(message.text or (message.attachment.file_name if message.attachment else ""))
    body.highlight_words(words, style="bold reverse", case_sensitive=False)
    line.append_text(body)
    return line


class SearchScreen(ModalScreen[Message | None]):
    """The results (newest first); dismissed with the chosen message, or ``None``."""

    DEFAULT_CSS = """
    SearchScreen { align: center middle; }
    #search { width: 90%; height: auto; max-height: 80%;
              border: round $primary; background: $surface; padding: 0 1; }
    #search-title { text-style: bold; padding: 0 0 1 0; }
    #search-results { height: auto; max-height: 100%; border: none; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, query: str, results: list[Message], prompts: list[Text]) -> None:
        super().__init__()
        self.query_text = query
        self.results = {m.id: m for m in results}
        self._prompts = list(zip((m.id for m in results), prompts, strict=True))

    def compose(self) -> ComposeResult:
        n = len(self.results)
        with Vertical(id="search"):
            yield Label(
                f"{n} message{' matches' if n == 1 else 's match'} {self.query_text!r} — "
                "Enter opens, Esc closes",
                id="search-title",
            )
            yield OptionList(
                *(Option(prompt, id=mid) for mid, prompt in self._prompts), id="search-results"
            )

    def on_mount(self) -> None:
        self.query_one("#search-results", OptionList).focus()

    @on(OptionList.OptionSelected, "#search-results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.results.get(event.option.id or ""))

    def action_close(self) -> None:
        """Esc: back to the chat."""
        self.dismiss(None)

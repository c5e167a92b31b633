"""``/help``: the keys and commands of the chat TUI as a table (a modal screen), and the one-line
usage of a single command for error messages."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["COMMANDS", "ID_NOTE", "KEYS", "Command", "HelpScreen", "command", "help_table", "usage"]


@dataclass(frozen=True, slots=True)
class Command:
    """One ``/command`` of the input box."""

    name: str
    args: str
    summary: str
    aliases: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        """``/name ARGS``."""
        return f"{self.name} {self.args}".rstrip()


COMMANDS: list[Command] = [
    Command("/chat", "USER|GROUP", "open a conversation", ("/open",)),
    Command("/send-file", "PATH", "send a file (spaces in PATH are fine)", ("/file",)),
    Command("/save", "[DIR]", "save the last file received here (default: HOME/downloads)"),
    Command("/verify", "", "show the safety number with this user"),
    Command("/accept", "", "accept this user's changed key (after /verify)"),
    Command("/unverify", "", "take back this user's verification (on your other devices too)"),
    Command("/group", "NAME USER...", "create a group"),
    Command("/add", "USER...", "add members (in a group)"),
    Command("/remove", "USER...", "remove members (in a group)"),
    Command("/leave", "", "leave this group"),
    Command("/reply", "[ID] TEXT", "reply quoting message ID (default: the newest of the others)"),
    Command("/edit", "[ID] TEXT", "edit your message ID (default: your newest)"),
    Command("/delete", "ID [--for-me]", "delete your message for everyone (or any, only here)"),
    Command("/react", "[ID] EMOJI", "react to a message; /react ID --remove takes it back"),
    Command("/unreact", "[ID]", "remove your reaction"),
    Command("/disappear", "DURATION|off", "disappearing messages: 30s .. 4w (s, m, h, d, w)"),
    Command("/search", "TEXT", "search the history on this device (Enter opens a result)"),
    Command("/jump", "ID", "show message ID (clicking a reply shows what it quotes)"),
    Command("/help", "", "this help"),
    Command("/quit", "", "quit", ("/exit",)),
]

#: What ``ID`` means in the commands below.
ID_NOTE = ("ID", "a message's #id as shown (#3f9a0c), or a unique start of it (4+ digits)")

KEYS: list[tuple[str, str]] = [
    ("Enter", "send the message or run the command"),
    ("PgUp / PgDn, mouse wheel", "scroll the conversation (also while typing)"),
    ("Ctrl+End", "back to the newest message"),
    ("Ctrl+N", "next conversation"),
    ("Ctrl+L", "focus the conversation list (Enter opens)"),
    ("Ctrl+Q", "quit"),
    ("Click on a reply", "show the message it quotes"),
    ("Esc", "close this help"),
]


def command(name: str) -> Command | None:
    """The command called ``name`` (or one of its aliases)."""
    for c in COMMANDS:
        if name == c.name or name in c.aliases:
            return c
    return None


def usage(name: str) -> str:
    """``usage: /send-file PATH — send a file ...`` for error messages (one command, not all)."""
    c = command(name)
    if c is None:
        return f"unknown command {name} — /help lists the commands"
    return f"usage: {c.usage} — {c.summary}"


def help_table() -> Table:
    """Keys and commands, two sections of one table."""
    table = Table(show_header=False, box=None, padding=(0, 2), expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row(Text("Keys", style="bold underline"), "")
    for key, what in KEYS:
        table.add_row(key, what)
    table.add_row("", "")
    table.add_row(Text("Commands", style="bold underline"), "")
    table.add_row(*ID_NOTE)
    for c in COMMANDS:
        aliases = f" (or {', '.join(c.aliases)})" if c.aliases else ""
        table.add_row(c.usage, c.summary + aliases)
    return table


class HelpScreen(ModalScreen[None]):
    """The help table over the chat; Esc, q or F1 closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 100; max-width: 100%; height: auto; max-height: 90%;
            border: round $primary; background: $surface; padding: 0 1; }
    #help-table { width: 100%; height: auto; }
    """
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("f1", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_table(), id="help-table")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)

"""A message row of the conversation pane: clicking a reply jumps to the message it quotes."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message as TextualMessage
from textual.widgets import Static

from clients.sdk.models import Message

__all__ = ["MessageRow", "dom_id"]


def dom_id(message_id: str) -> str:
    """The row's widget id for a message id."""
    return "m-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in message_id)


class MessageRow(Static):
    """One message; ``message`` is what it shows."""

    class QuoteClicked(TextualMessage):
        """The user clicked a reply: show the message it quotes."""

        def __init__(self, conversation: str, message_id: str) -> None:
            super().__init__()
            self.conversation = conversation
            self.message_id = message_id

    def __init__(self, message: Message, content: Text) -> None:
        classes = "msg " + ("outgoing" if message.outgoing else "incoming")
        super().__init__(content, id=dom_id(message.id), classes=classes)
        self.message = message

    def show(self, message: Message, content: Text) -> None:
        """Redraw with ``message`` (an edit, a reaction, a receipt, a tombstone)."""
        self.message = message
        self.update(content)

    def on_click(self, event: events.Click) -> None:
        """A click on a reply jumps to the quoted message."""
        if self.message.reply_to is not None:
            event.stop()
            quoted = self.message.reply_to.id
            self.post_message(self.QuoteClicked(self.message.conversation, quoted))

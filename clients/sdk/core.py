"""What the feature modules (attachments, groups, devices and linking, peers) see of the client.

:class:`Core` is a :class:`typing.Protocol` that :class:`~clients.sdk.client.VoxClient`
satisfies; feature modules are functions over it, so none of them imports the shell (no
import cycles) and each can be driven by a stand-in in tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from clients.sdk.content import Content, ConversationContent
from clients.sdk.engine import ClientEngine
from clients.sdk.identity import LocalIdentity
from clients.sdk.models import Event, SendResult, ServerConfig
from clients.sdk.protocol import ClientProtocol, OutgoingSend
from clients.sdk.transport import RelayHttp
from clients.store.base import Store

if TYPE_CHECKING:
    from clients.sdk.messaging import Outbox
    from clients.sdk.pipeline import SendPipeline
    from clients.sdk.receipts import ReceiptSender

__all__ = ["Core"]


class Core(Protocol):
    """The client's state and the few I/O operations features build on."""

    store: Store
    protocol: ClientProtocol
    engine: ClientEngine
    pipeline: SendPipeline
    outbox: Outbox
    receipts: ReceiptSender
    http: RelayHttp
    identity: LocalIdentity
    server_url: str

    @property
    def username(self) -> str:
        """Our username."""
        ...

    @property
    def device_id(self) -> int:
        """This device's id."""
        ...

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background (cancelled when the client disconnects)."""
        ...

    async def config(self) -> ServerConfig:
        """The relay's configuration (cached)."""
        ...

    async def emit(self, events: Iterable[Event]) -> None:
        """Hand events to every subscriber."""
        ...

    async def send_direct(
        self, to: str | Iterable[str], content: Content, *, ephemeral: bool = False
    ) -> SendResult | None:
        """Encrypt ``content`` pairwise to every device of ``to`` (and our other devices)."""
        ...

    async def send_chat(self, conversation: str, content: ConversationContent) -> SendResult:
        """Record a conversation message (a text, file, edit, delete, reaction or timer
        change) in the outbox, then send it in order with the conversation's others."""
        ...

    async def deliver(
        self, users: set[str], build: Callable[[], list[OutgoingSend]]
    ) -> SendResult | None:
        """Build (encrypt) and send through the send builder; retries as the engine decides."""
        ...

"""The asyncio shell: :class:`VoxClient` owns the socket, the HTTP pool, the tasks and the clock.

No protocol decision is taken here (``docs/architecture.md``): the
:class:`~clients.sdk.engine.ClientEngine` routes frames and decides retries, the sans-I/O
:class:`~clients.sdk.protocol.ClientProtocol` encrypts and stores, and features are functions
over :class:`~clients.sdk.core.Core` bound as methods. Tasks: the *reader* (frames in,
reconnects), the *processor* (:func:`~clients.sdk.inbox.run`), *maintenance*.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from clients.sdk import attachments, group_admin, inbox, linking, messaging, peers, profile
from clients.sdk import message_ops as ops
from clients.sdk.attachments import Progress
from clients.sdk.content import Content, ConversationContent
from clients.sdk.engine import Answer, ClientEngine, Process, Replenish, ack_texts
from clients.sdk.errors import AuthFailed, ClientError, NoProfile, RelayUnavailable, StoreError
from clients.sdk.events import EventHub
from clients.sdk.identity import LocalIdentity
from clients.sdk.linking import LinkInvitation
from clients.sdk.models import Event, SendResult, ServerConfig, SignedOut
from clients.sdk.pipeline import SendPipeline
from clients.sdk.protocol import ClientProtocol, OutgoingSend
from clients.sdk.receipts import ReceiptSender
from clients.sdk.transport import RelayHttp, RelaySocket, SocketClosed
from clients.store import errors as store_errors
from clients.store.base import Store
from wire.codes import CloseCode

__all__ = ["LinkInvitation", "Progress", "VoxClient"]

log = logging.getLogger("vox.client")


class VoxClient:
    """One device of one account: the SDK's public entry point. Open it with
    :meth:`register`, :meth:`join` or :meth:`open`; use ``async with`` (or :meth:`close`)."""

    def __init__(
        self,
        store: Store,
        *,
        home: Path | None = None,
        owns_store: bool = True,
        http_timeout: float = 30.0,
    ) -> None:
        try:
            loaded = store.load_profile()
        except store_errors.StoreError as exc:
            raise StoreError(str(exc)) from None
        if loaded is None:
            raise NoProfile(str(home or "the store"))
        self.store, self.home, self.server_url = store, home, loaded.server_url
        self.identity = LocalIdentity.from_profile(loaded)
        self.protocol = ClientProtocol(store, self.identity)
        self.engine = ClientEngine(self.identity.username)
        self._owns_store = owns_store
        self.http = RelayHttp(
            loaded.server_url, timeout=http_timeout, token_cache=profile.token_cache(store)
        )
        self.http.set_credentials(
            self.identity.username, self.identity.device_id, self.identity.auth_key
        )
        self.pipeline, self.outbox = SendPipeline(self), messaging.Outbox(self)
        self.receipts = ReceiptSender(self)  # owed ones go at each new connection
        self._socket: RelaySocket | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._processor_task: asyncio.Task[None] | None = None
        self._maintenance_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None  # one per client, not per connect
        self._deliveries: asyncio.Queue[Process] = asyncio.Queue()
        self.events = EventHub()
        self._signed_out: AuthFailed | None = None  # the relay refused this device for good
        self._signed_out_event = asyncio.Event()
        self._connected, self._new_socket = asyncio.Event(), asyncio.Event()
        self._closing = self._receive = False
        self._last_activity = time.monotonic()
        #: Seconds between maintenance rounds while connected (prekey stock, rotation).
        self.maintenance_interval = 3600.0
        self._tasks: set[asyncio.Task[Any]] = set()
        # A queued DELETE of our file message, once accepted, deletes its blob on the relay.
        self.events.on_event(lambda event: attachments.on_event(self, event))

    # --- opening -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls, home: Path | str, *, passphrase: str | None = None, lock_timeout: float = 10.0
    ) -> VoxClient:
        """Open the profile in ``home`` (no network until you :meth:`connect` or send)."""
        store = profile.open_existing(Path(home), passphrase, lock_timeout)
        try:
            return cls(store, home=Path(home))
        except BaseException:
            store.close()
            raise

    @classmethod
    async def register(
        cls, home: Path | str, server: str, username: str, *, invite: str | None = None,
        passphrase: str | None = None, lock_timeout: float = 10.0, device_id: int = 1,
    ) -> VoxClient:  # fmt: skip
        """Create an account (account key, device keys, prekeys, device list v1) and log in."""
        store = await profile.register(
            Path(home), server, username, invite=invite, passphrase=passphrase,
            lock_timeout=lock_timeout, device_id=device_id,
        )  # fmt: skip
        return await cls._logged_in(store, Path(home))

    @classmethod
    async def join(
        cls, home: Path | str, server: str, code: str, *, passphrase: str | None = None,
        offer_timeout: float = 60.0, lock_timeout: float = 10.0,
    ) -> VoxClient:  # fmt: skip
        """Become a new device of an existing account using a code from :meth:`link`."""
        store = await profile.join(
            Path(home), server, code, passphrase, offer_timeout, lock_timeout
        )
        return await cls._logged_in(store, Path(home))

    @classmethod
    async def _logged_in(cls, store: Store, home: Path) -> VoxClient:
        client = cls(store, home=home)
        try:
            await client.http.login()
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        """Disconnect and release the profile."""
        await self.disconnect()
        await self.http.aclose()
        if self._owns_store:
            self.store.close()

    async def __aenter__(self) -> VoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def username(self) -> str:
        """Our username."""
        return self.identity.username

    @property
    def device_id(self) -> int:
        """This device's id."""
        return self.identity.device_id

    async def config(self) -> ServerConfig:
        """The relay's ``/v1/config`` (brand, registration policy, limits); cached locally."""
        return await profile.config(self.store, self.http)

    # --- events (clients.sdk.events) -------------------------------------------------

    def on_event(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns an unsubscribe function."""
        return self.events.on_event(callback)

    def messages(self) -> AsyncIterator[Event]:
        """Every event from now on (connect first): messages, receipts, typing, ..."""
        return self.events.messages()

    async def emit(self, events: Iterable[Event]) -> None:
        """Hand ``events`` to every subscriber and callback."""
        await self.events.emit(events)

    # --- connection --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is up."""
        return self._connected.is_set()

    async def connect(self, *, receive: bool = True, open_timeout: float = 15.0) -> None:
        """Open the WebSocket. With ``receive=False`` deliveries are left queued on the relay
        (a send-only process such as ``vox send`` must not consume them)."""
        self._closing = False
        reconnect = False
        self.outbox.load()  # queued messages of earlier runs, resumed once connected
        if self._reader_task is None:
            await self._open_socket()
            self._reader_task = asyncio.create_task(self._run_reader(), name="vox-reader")
        elif receive and not self._receive:
            reconnect = True  # deliveries left unacked meanwhile come again on a new socket
        if receive and self._processor_task is None:
            self._receive = True
            self._processor_task = asyncio.create_task(
                inbox.run(self, self._deliveries, self._ack), name="vox-processor"
            )
            maintain = peers.maintain(self, lambda: self.maintenance_interval)
            self._maintenance_task = asyncio.create_task(maintain, name="vox-maintenance")
        if reconnect and self._socket is not None:
            self._new_socket.clear()
            await self._socket.close()
            await asyncio.wait_for(self._new_socket.wait(), open_timeout)
        await asyncio.wait_for(self._connected.wait(), open_timeout)
        if self._sweeper_task is None:
            sweeper = ops.run_sweeper(self.store, emit=self.emit)
            self._sweeper_task = asyncio.create_task(sweeper, name="vox-sweeper")

    async def _open_socket(self) -> None:
        try:
            socket = await RelaySocket.connect(self.http.ws_url, await self.http.token())
        except SocketClosed:
            await self.http.login()
            try:
                socket = await RelaySocket.connect(self.http.ws_url, await self.http.token())
            except SocketClosed as exc:
                raise AuthFailed(exc.reason) from None
        self._socket = socket
        self._connected.set()
        self._new_socket.set()
        self.pipeline.connection_up()
        self.receipts.resume()  # what is owed goes now
        # Blobs of file messages whose DELETE the relay accepted but not their own DELETE yet.
        self.spawn(attachments.delete_withdrawn(self))

    async def disconnect(self) -> None:
        """Close the WebSocket and stop the background tasks."""
        self._closing = True
        tasks = (
            self._maintenance_task,
            self._processor_task,
            self._reader_task,
            self._sweeper_task,
            *self._tasks,
        )
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._maintenance_task = self._processor_task = self._reader_task = None
        self._sweeper_task = None
        # Unhandled deliveries come again, in order, from the one the stopped processor held.
        self._deliveries = asyncio.Queue()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
            self._socket = None
        self._connected.clear()
        self.outbox.flush_sent()  # the sends accepted until the reader stopped
        self.receipts.write_taken()  # and the receipts
        self.pipeline.close(RelayUnavailable(self.server_url, "disconnected"))
        self.outbox.forget()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background coroutine, keeping a reference until it finishes."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_reader(self) -> None:
        while not self._closing:
            socket = self._socket
            if socket is None:
                try:
                    await self._open_socket()
                    self.engine.reconnect.reset()
                except AuthFailed as exc:  # removed, revoked, bad key: retrying cannot help
                    await self._sign_out(exc)
                    return
                except RelayUnavailable as exc:
                    log.info("reconnect failed: %s", exc)
                    await asyncio.sleep(self.engine.reconnect.next())
                continue
            try:
                frame = await socket.recv()
            except SocketClosed as exc:
                log.info("connection closed: %s", exc)
                self._socket = None
                self._connected.clear()
                lost = RelayUnavailable(self.server_url, str(exc))
                self.pipeline.connection_down(lost, reconnecting=True)
                if exc.code == CloseCode.UNAUTHORIZED:
                    self.http.forget_token()
                continue
            self._last_activity = time.monotonic()
            routed = self.engine.route(frame, receiving=self._receive)
            if isinstance(routed, Answer):
                self.pipeline.answered(routed)
            elif isinstance(routed, Process):
                self._deliveries.put_nowait(routed)
            elif isinstance(routed, Replenish) and self._maintenance_task is not None:
                self.spawn(self._quietly(peers.replenish_prekeys(self)))

    async def _sign_out(self, error: AuthFailed) -> None:
        log.warning("the relay refused this device; not reconnecting: %s", error.reason)
        self._signed_out = error
        self._signed_out_event.set()
        gone = RelayUnavailable(self.server_url, error.reason)
        self.pipeline.connection_down(gone, reconnecting=False)  # sends fail with `error` now
        await self.emit([SignedOut(error.reason, messaging.now_ms())])

    # --- deliveries --------------------------------------------------------------------

    async def _ack(self, seqs: list[int]) -> None:
        if self._socket is not None:
            with contextlib.suppress(SocketClosed):
                await self._socket.send_texts(ack_texts(seqs))
        self._last_activity = time.monotonic()

    @staticmethod
    async def _quietly(work: Awaitable[Any]) -> None:
        try:
            await work
        except ClientError as exc:
            log.info("background work failed: %s", exc)

    # --- sending -----------------------------------------------------------------------

    async def ensure_connected(self) -> RelaySocket:
        """The live socket (connecting send-only if needed); raises when signed out."""
        if self._signed_out is not None:
            raise self._signed_out
        if self._reader_task is None:
            await self.connect(receive=False)
        if self._connected.is_set() and self._socket is not None:
            return self._socket  # the usual case: no waiting, no extra event-loop turn
        waits = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._signed_out_event)]
        try:
            await asyncio.wait(waits, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._signed_out is not None:
            raise self._signed_out
        if not self._connected.is_set() or self._socket is None:
            raise RelayUnavailable(self.server_url, "not connected")
        return self._socket

    async def deliver(
        self, users: set[str], build: Callable[[], list[OutgoingSend]]
    ) -> SendResult | None:
        """Build (encrypt) and send; retries as the engine decides."""
        return await self.pipeline.deliver(users | {self.username}, build)

    async def send_direct(
        self, to: str | Iterable[str], content: Content, *, ephemeral: bool = False
    ) -> SendResult | None:
        """Encrypt ``content`` pairwise to every device of ``to`` (and our other devices)."""
        return await self.pipeline.send_direct(to, content, ephemeral=ephemeral)

    async def send_chat(self, conversation: str, content: ConversationContent) -> SendResult:
        """Record a conversation message (outbox, history), then send it in order."""
        return await self.outbox.send(conversation, content)

    async def receive(self, wait: float = 2.0) -> list[Event]:
        """Connect, collect events until nothing new arrived for ``wait`` seconds, return them."""
        events: list[Event] = []
        unsubscribe = self.on_event(events.append)
        try:
            if self._reader_task is None or not self._receive:
                await self.connect(receive=True)
            self._last_activity = time.monotonic()
            while True:
                idle = time.monotonic() - self._last_activity
                if idle >= wait and self._deliveries.empty():
                    break
                await asyncio.sleep(min(0.05, max(0.01, wait - idle)))
        finally:
            unsubscribe()
        return events

    # --- the public API: feature functions over Core, bound as methods ------------------

    send_text = messaging.send_text
    edit, delete, react, reply = ops.edit, ops.delete, ops.react, ops.reply
    set_timer, search = ops.set_timer, ops.search

    def timer(self, conversation: str) -> int:
        """The conversation's disappearing-messages timer in seconds (0 = off)."""
        return ops.timer(self.store, conversation)

    send_typing, mark_read = messaging.send_typing, messaging.mark_read
    queued, operations = messaging.queued, messaging.operations
    history, conversations = messaging.history, messaging.conversations
    send_file, upload_file = attachments.send_file, attachments.upload_file
    verify, accept_key = peers.verify, peers.accept_key
    clear_verification, devices = peers.clear_verification, peers.devices
    remove_device, replenish_prekeys = peers.remove_device, peers.replenish_prekeys
    rotate_signed_prekey = peers.rotate_signed_prekey
    link, wait_linked = linking.offer, linking.wait_linked
    groups, create_group = group_admin.groups, group_admin.create_group
    add_members, remove_members = group_admin.add_members, group_admin.remove_members
    leave_group, send_group_text = group_admin.leave_group, group_admin.send_group_text
    send_group_file, download = group_admin.send_group_file, attachments.download

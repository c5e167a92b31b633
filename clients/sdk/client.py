"""The asyncio shell: :class:`VoxClient` owns the socket, the HTTP pool and the clock.

Everything stateful and cryptographic happens in :class:`~clients.sdk.protocol.ClientProtocol`
(sans-I/O); this module moves bytes between it, the relay and the application:

* a *reader* task reads WebSocket frames: ``accepted``/``mismatch``/``error`` resolve the
  waiting send, ``deliver`` goes to the processing queue, ``ephemeral`` (typing) is decrypted
  at once, ``prekeys_low`` schedules a replenishment;
* a *processor* task handles deliveries strictly in order: fetch the sender's device list if
  needed, decrypt + store (one store transaction), then ack; events go to every
  :meth:`VoxClient.messages` iterator and :meth:`VoxClient.on_event` callback;
* a lost connection is re-established with backoff; pending sends are retried with the same
  client message id, so the relay never stores one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.sdk import identity as ids
from clients.sdk import linking, trust
from clients.sdk.content import (
    AttachmentContent,
    Content,
    GroupAction,
    GroupUpdate,
    PayloadKind,
    Receipt,
    ReceiptKind,
    RelayPayload,
    TextContent,
    Typing,
    decode_content,
    new_message_id,
)
from clients.sdk.errors import (
    AttachmentError,
    AuthFailed,
    ClientError,
    GroupError,
    LinkError,
    NoProfile,
    ProfileExists,
    ProfileLocked,
    RelayRejected,
    RelayUnavailable,
    StoreError,
    UnknownUser,
    UntrustedIdentity,
)
from clients.sdk.groups import new_group_id
from clients.sdk.identity import LocalIdentity
from clients.sdk.models import (
    DecryptFailure,
    DeviceInfo,
    Event,
    GroupInfo,
    KeyChanged,
    Message,
    SendResult,
    ServerConfig,
    SignedOut,
    TypingEvent,
    Verification,
)
from clients.sdk.protocol import (
    ClientProtocol,
    DeviceBundle,
    Envelope,
    NeedDeviceList,
    OutgoingSend,
    Received,
    SendReceipt,
    message_from_stored,
)
from clients.sdk.transport import RelayHttp, RelaySocket, SocketClosed, b64, unb64
from clients.store import errors as store_errors
from clients.store.base import Store
from clients.store.models import (
    ConversationSummary,
    DeliveryState,
    OutboxEntry,
    group_conversation,
    is_group_conversation,
)
from crypto.attachments import (
    DEFAULT_CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    padded_size,
)
from crypto.errors import AttachmentMismatch, VoxError
from crypto.keys import validate_username

__all__ = ["LinkInvitation", "Progress", "VoxClient"]

log = logging.getLogger("vox.client")

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)`` for uploads and downloads."""

_SEND_TIMEOUT = 30.0
_BuildRequest = tuple[
    set[str],
    bool,
    Callable[[], "list[OutgoingSend]"],
    "asyncio.Future[list[tuple[OutgoingSend, asyncio.Future[dict[str, Any]]]]]",
]
_MAX_ATTEMPTS = 5


def _open_store(home: Path, passphrase: str | None, *, create: bool, lock_timeout: float) -> Store:
    from clients.store.sqlite import SqliteStore

    try:
        return SqliteStore.open(
            home, passphrase=passphrase, lock_timeout=lock_timeout, create=create
        )
    except store_errors.ProfileLocked:
        raise ProfileLocked(str(home)) from None
    except store_errors.WrongPassphrase as exc:
        # "wrong passphrase for this profile", "this profile is protected by a passphrase;
        # none was given", "this profile uses a key file, not a passphrase"
        raise StoreError(str(exc)) from None
    except store_errors.StoreError as exc:
        raise StoreError(str(exc)) from None


def _exists(home: Path) -> bool:
    from clients.store.sqlite import profile_exists

    return profile_exists(home)


@dataclass(frozen=True, slots=True)
class LinkInvitation:
    """What :meth:`VoxClient.link` returns: the code to type on the new device."""

    code: str
    device_id: int
    list_version: int


class VoxClient:
    """One device of one account: the SDK's public entry point.

    Open it with :meth:`register`, :meth:`join` or :meth:`open` (all ``async``), use it as an
    ``async with`` block (or call :meth:`close`).
    """

    def __init__(
        self,
        store: Store,
        *,
        home: Path | None = None,
        owns_store: bool = True,
        http_timeout: float = 30.0,
    ) -> None:
        try:
            profile = store.load_profile()
        except store_errors.StoreError as exc:
            raise StoreError(str(exc)) from None
        if profile is None:
            raise NoProfile(str(home or "the store"))
        self.store = store
        self.home = home
        self.server_url = profile.server_url
        self.identity = LocalIdentity.from_profile(profile)
        self.protocol = ClientProtocol(store, self.identity)
        self._owns_store = owns_store
        self.http = RelayHttp(
            profile.server_url,
            timeout=http_timeout,
            token_cache=(self._load_token, self._save_token),
        )
        self.http.set_credentials(
            self.identity.username, self.identity.device_id, self.identity.auth_key
        )
        self._socket: RelaySocket | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._processor_task: asyncio.Task[None] | None = None
        self._maintenance_task: asyncio.Task[None] | None = None
        self._deliveries: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._callbacks: list[Callable[[Event], Any]] = []
        self._connected = asyncio.Event()
        #: Set (with the error) when the relay refused this device for good: no reconnects.
        self._signed_out: AuthFailed | None = None
        self._signed_out_event = asyncio.Event()
        self._new_socket = asyncio.Event()
        self._closing = False
        self._receive = False
        self._send_lock = asyncio.Lock()
        self._last_activity = time.monotonic()
        self._link_waiters: list[asyncio.Future[bytes]] = []
        self._reported_changes: set[str] = set()
        self._in_flight: set[str] = set()
        self._lists_checked: dict[str, float] = {}
        self._receipts: dict[tuple[str, ReceiptKind], list[bytes]] = {}
        self._sent_batch: list[str] = []
        self._build_queue: list[_BuildRequest] = []
        self._sent_flush: asyncio.Future[None] | None = None
        self._sent_timer: asyncio.TimerHandle | None = None
        #: Seconds a fetched device list is trusted before a send refetches it (a new process
        #: always refetches once, so a changed key is noticed on the next send).
        self.device_list_ttl = 60.0
        #: Seconds between maintenance rounds while connected (prekey stock, signed prekey
        #: rotation): a client left running for weeks still rotates on schedule.
        self.maintenance_interval = 3600.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- opening -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls, home: Path | str, *, passphrase: str | None = None, lock_timeout: float = 10.0
    ) -> VoxClient:
        """Open the profile in ``home`` (no network until you :meth:`connect` or send)."""
        home = Path(home)
        if not _exists(home):
            raise NoProfile(str(home))
        store = _open_store(home, passphrase, create=False, lock_timeout=lock_timeout)
        try:
            return cls(store, home=home)
        except BaseException:
            store.close()
            raise

    @classmethod
    async def register(
        cls,
        home: Path | str,
        server: str,
        username: str,
        *,
        invite: str | None = None,
        passphrase: str | None = None,
        lock_timeout: float = 10.0,
        device_id: int = 1,
    ) -> VoxClient:
        """Create an account (account key, device keys, prekeys, device list v1) and log in."""
        home = Path(home)
        try:
            validate_username(username)
        except VoxError:
            raise ClientError(f"invalid username {username!r}: use 3-32 of a-z 0-9 _ . -") from None
        if _exists(home):
            raise ProfileExists(str(home))
        http = RelayHttp(server)
        try:
            await http.config()  # fail early (and clearly) on a wrong URL
            store = _open_store(home, passphrase, create=True, lock_timeout=lock_timeout)
            try:
                me = ids.new_identity(username, device_id, None)
                signed_list = ids.first_device_list(me)
                with store.transaction():
                    prekeys = ids.registration_prekeys(store, me)
                body: dict[str, Any] = {
                    "username": username,
                    "account_key": b64(me.account_key.public_key.to_bytes()),
                    "device_list": b64(signed_list.to_bytes()),
                    "prekeys": prekeys,
                }
                if invite:
                    body["invite"] = invite
                await http.register(body)
                with store.transaction():
                    store.save_profile(me.to_profile(http.base_url))
                    own_key = me.account_key.public_key.to_bytes()
                    trust.accept_device_list(store, username, own_key, signed_list.to_bytes())
                    trust.accept_key(store, username)
            except BaseException:
                store.close()
                _remove_profile(home)
                raise
        finally:
            await http.aclose()
        client = cls(store, home=home)
        try:
            await client.http.login()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def join(
        cls,
        home: Path | str,
        server: str,
        code: str,
        *,
        passphrase: str | None = None,
        offer_timeout: float = 60.0,
        lock_timeout: float = 10.0,
    ) -> VoxClient:
        """Become a new device of an existing account using a code from :meth:`link`."""
        home = Path(home)
        if _exists(home):
            raise ProfileExists(str(home))
        store = _open_store(home, passphrase, create=True, lock_timeout=lock_timeout)
        try:
            await linking.join(store, server, code, offer_timeout=offer_timeout)
        except BaseException:
            store.close()
            _remove_profile(home)
            raise
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

    # --- properties --------------------------------------------------------------------

    @property
    def username(self) -> str:
        """Our username."""
        return self.identity.username

    @property
    def device_id(self) -> int:
        """This device's id."""
        return self.identity.device_id

    def _load_token(self) -> str | None:
        data = self.store.get_secret("token")
        return data.decode() if data else None

    def _save_token(self, token: str | None) -> None:
        self.store.set_secret("token", token.encode() if token else None)

    async def config(self) -> ServerConfig:
        """The relay's ``/v1/config`` (brand, registration policy, limits); cached locally."""
        import json

        try:
            data = await self.http.config()
            self.store.set_setting("config", json.dumps(data))
        except RelayUnavailable:
            cached = self.store.get_setting("config")
            if cached is None:
                raise
            data = json.loads(cached)
        brand = data.get("brand", {})
        return ServerConfig(
            name=str(brand.get("name", "Vox")),
            primary_color=str(brand.get("primary_color", "#4f46e5")),
            accent_color=str(brand.get("accent_color", "#22c55e")),
            background_color=str(brand.get("background_color", "#0f172a")),
            logo_url=brand.get("logo_url"),
            welcome_text=str(brand.get("welcome_text", "")),
            registration=str(data.get("registration", "open")),
            limits={k: float(v) for k, v in data.get("limits", {}).items()},
        )

    # --- events ------------------------------------------------------------------------

    def on_event(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (may return an awaitable). Returns an
        unsubscribe function."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    async def messages(self) -> AsyncIterator[Event]:
        """Every event from now on (connect first): messages, receipts, typing, ..."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def _emit(self, events: Iterable[Event]) -> None:
        for event in events:
            for queue in list(self._subscribers):
                queue.put_nowait(event)
            for callback in list(self._callbacks):
                try:
                    result = callback(event)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:  # a broken callback never stops the receive loop
                    log.exception("event callback failed")

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
        if self._reader_task is None:
            await self._open_socket()
            self._reader_task = asyncio.create_task(self._run_reader(), name="vox-reader")
        elif receive and not self._receive:
            # Deliveries that arrived while not receiving were left unacked: reconnecting makes
            # the relay deliver them again.
            reconnect = True
        if receive and self._processor_task is None:
            self._receive = True
            self._processor_task = asyncio.create_task(self._run_processor(), name="vox-processor")
            self._maintenance_task = asyncio.create_task(
                self._maintenance(), name="vox-maintenance"
            )
        if reconnect and self._socket is not None:
            self._new_socket.clear()
            await self._socket.close()
            await asyncio.wait_for(self._new_socket.wait(), open_timeout)
        await asyncio.wait_for(self._connected.wait(), open_timeout)
        self._spawn(self._flush_outbox_quietly())

    async def _open_socket(self) -> None:
        token = await self.http.token()
        try:
            socket = await RelaySocket.connect(self.http.ws_url, token)
        except SocketClosed:
            await self.http.login()
            try:
                socket = await RelaySocket.connect(self.http.ws_url, await self.http.token())
            except SocketClosed as exc:
                raise AuthFailed(exc.reason) from None
        self._socket = socket
        self._connected.set()
        self._new_socket.set()

    async def disconnect(self) -> None:
        """Close the WebSocket and stop the background tasks."""
        self._closing = True
        if self._sent_timer is not None:  # write pending "sent" updates now
            self._sent_timer.cancel()
            self._flush_sent()
        for task in (
            self._maintenance_task,
            self._processor_task,
            self._reader_task,
            *self._tasks,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._maintenance_task = self._processor_task = self._reader_task = None
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
            self._socket = None
        self._connected.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RelayUnavailable(self.server_url, "disconnected"))
        self._pending.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background coroutine, keeping a reference until it finishes."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_reader(self) -> None:
        backoff = 0.2
        while not self._closing:
            socket = self._socket
            if socket is None:
                try:
                    await self._open_socket()
                    backoff = 0.2
                    self._spawn(self._flush_outbox_quietly())
                except AuthFailed as exc:  # removed, revoked, bad key: retrying cannot help
                    await self._sign_out(exc)
                    return
                except RelayUnavailable as exc:
                    log.info("reconnect failed: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                continue
            try:
                frame = await socket.recv()
            except SocketClosed as exc:
                log.info("connection closed: %s", exc)
                self._socket = None
                self._connected.clear()
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(RelayUnavailable(self.server_url, str(exc)))
                self._pending.clear()
                if exc.code == 4401:
                    self.http._token = None
                continue
            self._last_activity = time.monotonic()
            self._dispatch(frame)

    async def _sign_out(self, error: AuthFailed) -> None:
        log.warning("the relay refused this device; not reconnecting: %s", error.reason)
        self._signed_out = error
        self._signed_out_event.set()
        await self._emit([SignedOut(error.reason, _now_ms())])

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("accepted", "mismatch", "error"):
            future = self._pending.pop(str(frame.get("id")), None)
            if future is not None and not future.done():
                future.set_result(frame)
            elif kind == "error":
                log.warning("relay error: %s %s", frame.get("code"), frame.get("message"))
        elif kind in ("deliver", "ephemeral"):
            if self._receive:
                self._deliveries.put_nowait(frame)
        elif kind == "prekeys_low" and self._maintenance_task is not None:
            self._spawn(self._replenish_quietly())

    async def _run_processor(self) -> None:
        while True:
            batch = [await self._deliveries.get()]
            while not self._deliveries.empty() and len(batch) < 100:
                batch.append(self._deliveries.get_nowait())
            try:
                seqs = await self._process_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a batch stop the loop; unacked ones come back
                log.exception("processing deliveries failed")
                seqs = []
            if seqs and self._socket is not None:
                with contextlib.suppress(SocketClosed):
                    await self._socket.send({"type": "ack", "seqs": seqs})
            self._last_activity = time.monotonic()
            # One receipt per sender and kind for the whole batch.
            receipts, self._receipts = self._receipts, {}
            for (to, kind), message_ids in receipts.items():
                for i in range(0, len(message_ids), 500):
                    receipt = SendReceipt(to, kind, tuple(message_ids[i : i + 500]))
                    self._spawn(self._send_receipt_quietly(receipt))

    async def _process_batch(self, frames: list[dict[str, Any]]) -> list[int]:
        """Decrypt and store a batch of deliveries in one store transaction; returns the
        sequence numbers to ack (every envelope handled, failures included)."""
        envelopes: list[tuple[Envelope, bool]] = []
        seqs: list[int] = []
        for frame in frames:
            ephemeral = frame.get("type") == "ephemeral"
            try:
                sender = frame.get("from") or {}
                envelope = Envelope(
                    seq=int(frame.get("seq", 0)),
                    envelope_id=str(frame.get("envelope") or ("eph-" + secrets.token_hex(8))),
                    sender_user=str(sender.get("user", "")),
                    sender_device=int(sender.get("device", 0)),
                    ts=int(frame.get("ts", 0)),
                    data=unb64(str(frame.get("data", ""))),
                )
            except (ValueError, TypeError, AttributeError):
                log.warning("malformed deliver frame")
                if not ephemeral and isinstance(frame.get("seq"), int):
                    seqs.append(frame["seq"])
                continue
            try:
                payload: RelayPayload | None = RelayPayload.from_bytes(envelope.data)
            except VoxError:
                payload = None
            if payload is not None and payload.kind is PayloadKind.LINK:
                for waiter in self._link_waiters:
                    if not waiter.done():
                        waiter.set_result(payload.data)
                if not ephemeral:
                    seqs.append(envelope.seq)
                continue
            need = self.protocol.precheck(envelope)
            if isinstance(need, NeedDeviceList):
                with contextlib.suppress(ClientError):
                    await self._refresh_devices(need.username, report=True)
            envelopes.append((envelope, ephemeral))
        results: list[tuple[Envelope, bool, Received]] = []
        try:
            with self.store.transaction():
                for envelope, ephemeral in envelopes:
                    results.append((envelope, ephemeral, self.protocol.receive(envelope)))
        except Exception:  # a store failure: retry one by one, ack only what was stored
            log.exception("batch store transaction failed; retrying envelopes one by one")
            results = []
            for envelope, ephemeral in envelopes:
                try:
                    results.append((envelope, ephemeral, self.protocol.receive(envelope)))
                except Exception:
                    log.exception("storing an envelope failed; it will be redelivered")
        for envelope, ephemeral, result in results:
            if ephemeral:
                await self._emit([e for e in result.events if isinstance(e, TypingEvent)])
                continue
            seqs.append(envelope.seq)
            for event in result.events:
                if isinstance(event, DecryptFailure):  # never the content, only metadata
                    log.warning(
                        "could not decrypt envelope %s from %s:%d (%s); acked",
                        event.envelope_id,
                        event.sender,
                        event.device,
                        event.error,
                    )
            await self._emit(result.events)
            for action in result.actions:
                if isinstance(action, SendReceipt):
                    self._receipts.setdefault((action.to, action.kind), []).extend(action.ids)
        return seqs

    async def _send_receipt_quietly(self, action: SendReceipt) -> None:
        receipt = Receipt(kind=action.kind, ids=action.ids, sent_at_ms=_now_ms())
        try:
            await self._send_direct(action.to, receipt)
        except ClientError as exc:
            log.info("receipt to %s not sent: %s", action.to, exc)

    # --- maintenance (prekeys) ---------------------------------------------------------

    async def _maintenance(self) -> None:
        while True:
            with contextlib.suppress(ClientError):
                await self.replenish_prekeys()
            with contextlib.suppress(ClientError):
                await self.rotate_signed_prekey()
            await asyncio.sleep(self.maintenance_interval)

    async def _replenish_quietly(self) -> None:
        with contextlib.suppress(ClientError):
            await self.replenish_prekeys()

    async def replenish_prekeys(self) -> int:
        """Upload one-time prekeys when the relay's stock is low; returns how many."""
        counts = await self.http.prekey_count()
        have = min(int(counts["one_time_prekeys"]), int(counts["one_time_pq_prekeys"]))
        threshold = int(counts.get("low_threshold", 10))
        if have > threshold:
            return 0
        target = min(int(counts.get("max_stock", 100)), ids.DEFAULT_BATCH * 2)
        count = max(0, min(target - have, ids.DEFAULT_BATCH))
        if count == 0:
            return 0
        with self.store.transaction():
            upload = ids.one_time_batch(self.store, self.identity, count)
        await self.http.upload_prekeys(upload)
        return count

    async def rotate_signed_prekey(self, *, force: bool = False) -> bool:
        """Rotate the signed prekey when it is older than a week (or ``force``)."""
        if not force and not ids.signed_prekey_due(self.store, time.time()):
            return False
        with self.store.transaction():
            upload = ids.rotate_signed_prekey(self.store, self.identity)
        await self.http.upload_prekeys(upload)
        return True

    # --- device lists and sessions -----------------------------------------------------

    async def _refresh_devices(self, username: str, *, report: bool = False) -> None:
        data = await self.http.devices(username)
        self._lists_checked[username] = time.monotonic()
        _, changed = self.protocol.accept_device_list_changed(
            username, unb64(data["account_key"]), unb64(data["device_list"])
        )
        if changed and username not in self._reported_changes:
            self._reported_changes.add(username)
            number = self._safety_number(username)
            await self._emit([KeyChanged(username, number, _now_ms())])

    async def _ensure_sessions(self, usernames: Iterable[str], *, refresh: bool = False) -> None:
        names = sorted(set(usernames))
        now = time.monotonic()
        for username in names:
            checked = self._lists_checked.get(username)
            if (
                refresh
                or checked is None
                or now - checked > self.device_list_ttl
                or self.protocol.device_list(username) is None
            ):
                await self._refresh_devices(username)
        for username, devices in self.protocol.missing_sessions(names).items():
            for device_id in devices:
                data = await self.http.bundle(username, device_id)
                account_key = unb64(data["account_key"])
                self.protocol.accept_device_list_changed(
                    username, account_key, unb64(data["device_list"])
                )
                for entry in data.get("devices", []):
                    if entry.get("device_id") == device_id:
                        bundle = _device_bundle(entry)
                        if bundle is None:
                            raise RelayRejected(
                                409, "no_prekeys", f"{username}:{device_id} has no prekeys yet"
                            )
                        try:
                            self.protocol.accept_bundle(username, account_key, bundle)
                        except VoxError as exc:
                            raise RelayRejected(
                                409, "bad_bundle", f"{username}:{device_id}: {exc}"
                            ) from None

    # --- sending -----------------------------------------------------------------------

    async def _ensure_connected(self) -> RelaySocket:
        if self._signed_out is not None:
            raise self._signed_out
        if self._reader_task is None:
            await self.connect(receive=False)
        if self._connected.is_set() and self._socket is not None:
            return self._socket  # the usual case: no waiting, no extra event-loop turn
        connected = asyncio.ensure_future(self._connected.wait())
        signed_out = asyncio.ensure_future(self._signed_out_event.wait())
        try:
            await asyncio.wait(
                (connected, signed_out), timeout=_SEND_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
            signed_out.cancel()
        if self._signed_out is not None:
            raise self._signed_out
        if not self._connected.is_set() or self._socket is None:
            raise RelayUnavailable(self.server_url, "not connected")
        return self._socket

    async def _write(
        self, socket: RelaySocket, send: OutgoingSend
    ) -> asyncio.Future[dict[str, Any]]:
        """Write one ``send`` frame; the returned future resolves with the relay's answer."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[send.client_id] = future
        frame = {
            "type": "send",
            "id": send.client_id,
            "ephemeral": send.ephemeral,
            "payloads": [
                {"data": b64(data), "to": [{"user": u, "device": d} for u, d in to]}
                for data, to in send.payloads
            ],
        }
        try:
            await socket.send(frame)
        except SocketClosed as exc:
            self._pending.pop(send.client_id, None)
            raise RelayUnavailable(self.server_url, str(exc)) from None
        return future

    async def _answer(
        self, send: OutgoingSend, future: asyncio.Future[dict[str, Any]]
    ) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(future, _SEND_TIMEOUT)
        except TimeoutError:
            raise RelayUnavailable(self.server_url, "no answer to a send") from None
        finally:
            if self._pending.get(send.client_id) is future:
                del self._pending[send.client_id]

    async def _transmit(self, send: OutgoingSend) -> dict[str, Any]:
        socket = await self._ensure_connected()
        return await self._answer(send, await self._write(socket, send))

    async def _build_and_write(
        self, users: set[str], refresh: bool, build: Callable[[], list[OutgoingSend]]
    ) -> list[tuple[OutgoingSend, asyncio.Future[dict[str, Any]]]]:
        """Encrypt and write under the send lock; concurrent sends are batched.

        Whoever gets the lock builds every request queued so far in **one** store transaction
        (one disk sync for many messages), then writes their frames in queue order. If any
        build fails, the batch is rolled back and each request is built on its own, so a bad
        request never leaves a trace in the store or disturbs the others.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[tuple[OutgoingSend, asyncio.Future[dict[str, Any]]]]]
        future = loop.create_future()
        self._build_queue.append((users, refresh, build, future))
        try:
            async with self._send_lock:
                if not future.done():
                    batch, self._build_queue = self._build_queue, []
                    await self._run_builds(batch)
            return await future
        except asyncio.CancelledError:
            # Our send was cancelled (e.g. the client is closing): nobody will read its result.
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()
            raise

    async def _run_builds(self, batch: list[_BuildRequest]) -> None:
        batch = [request for request in batch if not request[3].done()]  # drop cancelled sends
        if not batch:
            return
        try:
            every = set().union(*(users for users, _, _, _ in batch))
            await self._ensure_sessions(every, refresh=any(r for _, r, _, _ in batch))
            socket = await self._ensure_connected()
            built: list[tuple[_BuildRequest, list[OutgoingSend]]] = []
            try:
                with self.store.transaction():
                    built = [(request, request[2]()) for request in batch]
            except Exception:
                built = []
                for request in batch:
                    try:
                        built.append((request, request[2]()))
                    except Exception as exc:
                        if not request[3].done():
                            request[3].set_exception(exc)
            for request, sends in built:
                written = []
                try:
                    for send in sends:
                        if send.payloads:
                            written.append((send, await self._write(socket, send)))
                except RelayUnavailable as exc:
                    for send, pending in written:
                        self._pending.pop(send.client_id, None)
                        pending.cancel()
                    if not request[3].done():
                        request[3].set_exception(exc)
                    continue
                if not request[3].done():
                    request[3].set_result(written)
        except BaseException as exc:
            for request in batch:
                if not request[3].done():
                    error = (
                        exc
                        if isinstance(exc, Exception)
                        else RelayUnavailable(self.server_url, "send cancelled")
                    )
                    request[3].set_exception(error)
            if not isinstance(exc, Exception):
                raise

    async def _deliver(
        self, users: set[str], build: Callable[[], list[OutgoingSend]]
    ) -> SendResult | None:
        """Build (encrypt) and transmit, handling mismatch and dropped connections.

        Encryption and the socket write happen under one lock, so frames reach the relay in
        the order their ratchet steps were taken; answers are awaited outside it, so several
        sends may be in flight (a window).
        """
        refresh = False
        last: Exception | None = None
        for attempt in range(_MAX_ATTEMPTS):
            try:
                written = await self._build_and_write(users | {self.username}, refresh, build)
            except RelayUnavailable as exc:
                if attempt == 0 and not self._reader_task:
                    raise
                last = exc
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                continue
            result: SendResult | None = None
            retry = False
            for send, future in written:
                try:
                    answer = await self._answer(send, future)
                except RelayUnavailable as exc:
                    last = exc
                    retry = True
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                    break
                kind = answer.get("type")
                if kind == "accepted":
                    if send.accepted is not None:
                        with self.store.transaction():
                            send.accepted()
                    ts = int(answer.get("ts") or 0)
                    result = SendResult(send.client_id, ts, send.device_count)
                    continue
                if kind == "mismatch":
                    changed = {
                        str(d["user"]) for d in answer.get("missing", []) + answer.get("stale", [])
                    }
                    users = users | changed
                    for name in changed:
                        await self._refresh_devices(name)
                    for d in answer.get("stale", []):
                        self.protocol.sessions.drop(str(d["user"]), int(d["device"]))
                    last = RelayRejected(409, "mismatch", "device lists kept changing")
                    retry = True
                    break
                code = str(answer.get("code", "error"))
                if code == "unknown_user":
                    bad = answer.get("users") or sorted(users)
                    raise UnknownUser(str(bad[0]))
                if code in ("rate_limited", "internal", "busy"):
                    last = RelayRejected(429, code, str(answer.get("message", "")))
                    retry = True
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                    break
                raise RelayRejected(400, code, str(answer.get("message", "")))
            if not retry:
                return result
        assert last is not None
        raise last

    async def _send_direct(
        self, to: str | Iterable[str], content: Content, *, ephemeral: bool = False
    ) -> SendResult | None:
        users = {to} if isinstance(to, str) else set(to)
        for user in users:
            trust.require_trusted(self.store, user)
        return await self._deliver(
            users, lambda: [self.protocol.encode_direct(users, content, ephemeral=ephemeral)]
        )

    async def _send_chat(
        self, conversation: str, content: TextContent | AttachmentContent
    ) -> SendResult:
        """Persist (history + outbox) first, then send; the same id is reused on retries.

        The history row and outbox entry are written in the same store transaction as the
        first encryption (one commit), which is committed before anything goes out.
        """
        entry = OutboxEntry(content.message_id.hex(), conversation, content.to_bytes(), time.time())

        def persist() -> None:
            self.protocol.record_outgoing(conversation, content)
            self.store.outbox_put(entry)

        return await self._send_outbox_entry(conversation, content, persist)

    async def _send_outbox_entry(
        self,
        conversation: str,
        content: TextContent | AttachmentContent,
        persist: Callable[[], None] | None = None,
    ) -> SendResult:
        message_id = content.message_id.hex()
        self._in_flight.add(message_id)
        try:
            return await self._send_once(conversation, content, persist)
        finally:
            self._in_flight.discard(message_id)

    async def _send_once(
        self,
        conversation: str,
        content: TextContent | AttachmentContent,
        persist: Callable[[], None] | None,
    ) -> SendResult:
        message_id = content.message_id.hex()

        def persisted(build: Callable[[], list[OutgoingSend]]) -> list[OutgoingSend]:
            with self.store.transaction():
                if persist is not None and self.store.get_message(message_id) is None:
                    persist()
                else:
                    self.store.outbox_attempted(message_id)
                return build()

        try:
            return await self._send_built(conversation, content, persisted)
        except RelayUnavailable:
            if persist is not None and self.store.get_message(message_id) is None:
                with self.store.transaction():  # keep it: the outbox sends it later
                    persist()
            raise

    async def _send_built(
        self,
        conversation: str,
        content: TextContent | AttachmentContent,
        persisted: Callable[[Callable[[], list[OutgoingSend]]], list[OutgoingSend]],
    ) -> SendResult:

        if is_group_conversation(conversation):
            group_id = bytes.fromhex(conversation.removeprefix("group:"))
            group = self.protocol.groups.get(group_id)
            if group is None:
                raise GroupError(f"unknown group {group_id.hex()}")
            result = await self._deliver(
                set(group.members),
                lambda: persisted(lambda: self.protocol.encode_group(group_id, content)),
            )
        else:
            _check_user(conversation)
            trust.require_trusted(self.store, conversation)
            result = await self._deliver(
                {conversation},
                lambda: persisted(lambda: [self.protocol.encode_direct(conversation, content)]),
            )
        await self._mark_sent(content.message_id.hex())
        return result or SendResult(content.message_id.hex(), _now_ms(), 0)

    async def _mark_sent(self, message_id: str) -> None:
        """Outbox entry done, history state ``sent``: coalesced with other sends answered
        within a few milliseconds into one store transaction (one commit)."""
        loop = asyncio.get_running_loop()
        self._sent_batch.append(message_id)
        if self._sent_flush is None:
            self._sent_flush = loop.create_future()
            self._sent_timer = loop.call_later(0.002, self._flush_sent)
        await asyncio.shield(self._sent_flush)

    def _flush_sent(self) -> None:
        ids, self._sent_batch = self._sent_batch, []
        future, self._sent_flush = self._sent_flush, None
        self._sent_timer = None
        if not ids:
            if future is not None and not future.done():
                future.set_result(None)
            return
        try:
            with self.store.transaction():
                for message_id in ids:
                    self.store.outbox_remove(message_id)
                    self.protocol.mark_sent(message_id)
        except Exception as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(None)

    async def _flush_outbox(self) -> None:
        for entry in self.store.outbox_pending():
            if entry.message_id in self._in_flight:
                continue
            content = decode_content(entry.payload)
            if isinstance(content, TextContent | AttachmentContent):
                await self._send_outbox_entry(entry.conversation, content)
            else:
                self.store.outbox_remove(entry.message_id)

    async def _flush_outbox_quietly(self) -> None:
        try:
            await self._flush_outbox()
        except ClientError as exc:
            log.info("outbox retry failed: %s", exc)

    async def send_text(self, to: str, text: str, *, message_id: str | None = None) -> SendResult:
        """Send a text to a user (or a group conversation ``group:<id>``); returns once the
        relay accepted it. ``message_id`` (32 hex digits) may be chosen by the caller, e.g. to
        show the message before it is accepted; by default it is random."""
        mid = _message_id(message_id)
        if is_group_conversation(to):
            group_id, _ = self._group(to)
            content = TextContent(
                text=text, group_id=group_id, sent_at_ms=_now_ms(), message_id=mid
            )
            return await self._send_chat(group_conversation(group_id.hex()), content)
        _check_user(to)
        content = TextContent(text=text, sent_at_ms=_now_ms(), message_id=mid)
        return await self._send_chat(to, content)

    async def send_typing(self, to: str, active: bool = True) -> None:
        """Tell ``to`` (a user) that we are typing (an ephemeral send: never stored)."""
        if is_group_conversation(to):
            group_id = bytes.fromhex(to.removeprefix("group:"))
            group = self.protocol.groups.get(group_id)
            if group is None:
                return
            others = set(group.members) - {self.username}
            if others:
                typing = Typing(active=active, group_id=group_id, sent_at_ms=_now_ms())
                with contextlib.suppress(ClientError):
                    await self._send_direct(others, typing, ephemeral=True)
            return
        await self._send_direct(to, Typing(active=active, sent_at_ms=_now_ms()), ephemeral=True)

    async def mark_read(self, conversation: str) -> int:
        """Mark a conversation read and send read receipts; returns how many messages."""
        messages = self.store.mark_conversation_read(conversation)
        by_sender: dict[str, list[bytes]] = {}
        for message in messages:
            if message.sender != self.username:
                by_sender.setdefault(message.sender, []).append(bytes.fromhex(message.message_id))
        for sender, message_ids in by_sender.items():
            for i in range(0, len(message_ids), 500):
                receipt = Receipt(
                    kind=ReceiptKind.READ, ids=tuple(message_ids[i : i + 500]), sent_at_ms=_now_ms()
                )
                with contextlib.suppress(ClientError):
                    await self._send_direct(sender, receipt)
        return len(messages)

    # --- attachments -------------------------------------------------------------------

    async def send_file(
        self,
        to: str,
        path: Path | str,
        *,
        caption: str = "",
        progress: Progress | None = None,
    ) -> SendResult:
        """Encrypt ``path`` (streamed), upload it, then send the pointer to ``to`` (a user or a
        group conversation)."""
        if not is_group_conversation(to):
            _check_user(to)
            trust.require_trusted(self.store, to)
        pointer = await self.upload_file(path, progress=progress)
        group_id = b""
        if is_group_conversation(to):
            group_id = bytes.fromhex(to.removeprefix("group:"))
        content = AttachmentContent(
            pointer=pointer.to_bytes(), caption=caption, group_id=group_id, sent_at_ms=_now_ms()
        )
        return await self._send_chat(to, content)

    async def upload_file(
        self, path: Path | str, *, progress: Progress | None = None
    ) -> AttachmentPointer:
        """Encrypt and upload a file; returns its pointer (with the relay's blob id).

        The file is padded with zeros to Signal's bucket (``crypto.attachments.padded_size``,
        at most 5 % more, 541 bytes at least), so the relay sees only the bucket. If the
        padded blob exceeds the relay's ``max_attachment_bytes`` (from ``/v1/config``), an
        :class:`AttachmentError` is raised before anything is uploaded. ``progress`` counts
        blob bytes (padding included) against the exact blob size.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
        padded = padded_size(size)
        total = ciphertext_size(padded, DEFAULT_CHUNK_SIZE)
        limit: float | None = None
        with contextlib.suppress(RelayRejected, RelayUnavailable):
            limit = (await self.config()).limits.get("max_attachment_bytes")
        if limit is not None and total > limit:
            raise AttachmentError(
                f"{path.name} is too large for this relay: {size:,} bytes are {total:,} bytes "
                f"encrypted and padded, over the relay's limit of {int(limit):,} bytes"
            )
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
        encryptor = AttachmentEncryptor()
        sent = 0
        piece = 1024 * 1024

        def counted(out: bytes) -> bytes:
            nonlocal sent
            sent += len(out)
            if progress and out:
                progress(sent, total)
            return out

        async def chunks() -> AsyncIterator[bytes]:
            with handle:
                while data := await asyncio.to_thread(handle.read, piece):
                    out = encryptor.feed(data)
                    if encryptor.size > padded:  # the blob would exceed its Content-Length
                        raise AttachmentError(f"{path} grew while it was being uploaded")
                    if out:
                        yield counted(out)
            # Zero padding up to the bucket, streamed; a file that shrank meanwhile is padded
            # further, so the blob is always exactly ``total`` bytes.
            while (missing := padded - encryptor.size - encryptor.padding) > 0:
                out = encryptor.pad(min(missing, piece))
                if out:
                    yield counted(out)
            yield counted(encryptor.finish())

        try:
            answer = await self.http.upload_attachment(chunks(), total)
        except RelayRejected as exc:
            if exc.code != "too_large":
                raise
            raise AttachmentError(
                f"{path.name} is too large for this relay ({total:,} bytes encrypted and "
                f"padded): {exc.message}"
            ) from None
        finally:
            handle.close()  # also when the upload failed before reading the file
        blob_id = str(answer.get("id") or answer.get("attachment_id") or "")
        if not blob_id:
            raise AttachmentError("the relay did not return an attachment id")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return encryptor.pointer(
            content_type=content_type, file_name=path.name[:255], blob_id=blob_id
        )

    async def download(
        self,
        attachment: Message | AttachmentPointer | bytes,
        dest: Path | str,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Download, verify (digest, size) and decrypt an attachment to ``dest`` (a file, or a
        directory to put the original file name in). Nothing is left behind on failure.

        Padding (pointer version 2) is checked to be all zero and never written; ``progress``
        counts blob bytes against the exact (padded) blob size."""
        if isinstance(attachment, Message):
            if attachment.attachment is None:
                raise AttachmentError("this message has no attachment")
            raw = attachment.attachment.pointer
            pointer = AttachmentPointer.from_bytes(raw)
        elif isinstance(attachment, bytes):
            pointer = AttachmentPointer.from_bytes(attachment)
        else:
            pointer = attachment
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / (Path(pointer.file_name).name or "attachment")
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        decryptor = AttachmentDecryptor.for_pointer(pointer)
        total = pointer.ciphertext_size
        done = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                failure: VoxError | None = None

                async def sink(chunk: bytes) -> None:
                    # After a failure the rest is read but ignored, so the relay's response
                    # finishes normally instead of being cut off.
                    nonlocal done, failure
                    done += len(chunk)
                    if done > total:  # a relay that streams more than announced: cut it off
                        raise AttachmentError("the blob is larger than its pointer says")
                    if failure is None:
                        try:
                            out.write(decryptor.feed(chunk))
                        except VoxError as exc:
                            failure = exc
                    if progress:
                        progress(min(done, total), total)

                await self.http.download_attachment(pointer.blob_id, sink)
                try:
                    if failure is not None:
                        raise failure
                    out.write(decryptor.finish())
                except VoxError as exc:
                    what = type(exc).__name__
                    if isinstance(exc, AttachmentMismatch):  # digest, size or padding
                        what = f"{what}: {exc.field}"
                    raise AttachmentError(f"verification failed ({what})") from None
            tmp.replace(dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(attachment, Message):
            stored = self.store.get_message(attachment.id)
            if stored is not None and stored.attachment is not None:
                meta = dict(stored.attachment)
                meta["path"] = str(dest)
                self.store.update_attachment(attachment.id, meta)
        return dest

    # --- receiving helpers -------------------------------------------------------------

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
                busy = not self._deliveries.empty()
                if idle >= wait and not busy:
                    break
                await asyncio.sleep(min(0.05, max(0.01, wait - idle)))
        finally:
            unsubscribe()
        return events

    def history(self, conversation: str, *, limit: int = 100) -> list[Message]:
        """The last ``limit`` messages of a conversation, oldest first."""
        return [message_from_stored(m) for m in self.store.history(conversation, limit=limit)]

    def conversations(self) -> list[ConversationSummary]:
        """Conversations with messages, most recent first (with unread counts)."""
        return self.store.conversations()

    # --- identity and verification -----------------------------------------------------

    def _safety_number(self, username: str) -> str:
        peer = self.store.get_peer(username)
        if peer is None:
            raise UnknownUser(username)
        return trust.peer_safety_number(
            self.username, self.identity.account_key.public_key, username, peer.account_key
        )

    async def verify(self, username: str) -> Verification:
        """Fetch ``username``'s key (TOFU on first contact) and show the safety number."""
        _check_user(username)
        with contextlib.suppress(RelayUnavailable):
            await self._refresh_devices(username)
        peer = self.store.get_peer(username)
        if peer is None:
            raise UnknownUser(username)
        return Verification(
            username,
            self._safety_number(username),
            key_changed=peer.trust == "changed",
            verified=peer.trust == "verified",
        )

    async def accept_key(self, username: str) -> Verification:
        """Accept ``username``'s current account key (after comparing safety numbers)."""
        _check_user(username)
        with contextlib.suppress(RelayUnavailable):
            await self._refresh_devices(username)
        if self.store.get_peer(username) is None:
            raise UnknownUser(username)
        trust.accept_key(self.store, username)
        self._reported_changes.discard(username)
        return await self.verify(username)

    # --- devices and linking -----------------------------------------------------------

    async def devices(self) -> list[DeviceInfo]:
        """This account's devices, from its signed device list (refreshed from the relay)."""
        with contextlib.suppress(RelayUnavailable):
            await self._refresh_devices(self.username)
        device_list = self.protocol.device_list(self.username)
        if device_list is None:
            return []
        return [
            DeviceInfo(d.device_id, d.identity_key.raw.hex(), d.device_id == self.device_id)
            for d in device_list.devices
        ]

    async def link(self) -> LinkInvitation:
        """Prepare a new device: returns the one-time code to type into ``vox join``."""
        await self._refresh_devices(self.username)
        return await linking.offer(self)

    async def wait_linked(self, invitation: LinkInvitation, within: float = 300.0) -> int:
        """Wait until the new device has taken over its slot; returns its device id."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await self._refresh_devices(self.username)
            current = self.protocol.device_list(self.username)
            if current is not None and current.version > invitation.list_version:
                await self._share_groups_with_own_devices()
                return invitation.device_id
            await asyncio.sleep(0.5)
        raise LinkError("the new device did not join in time")

    async def _share_groups_with_own_devices(self) -> None:
        """Tell our other devices (e.g. a newly linked one) about every group, at its current
        epoch: devices that know the group ignore it, a new device adds it."""
        for info in self.groups():
            update = GroupUpdate(
                group_id=bytes.fromhex(info.group_id),
                epoch=info.epoch,
                name=info.name,
                action=GroupAction.ADD,
                members=info.members,
                sent_at_ms=_now_ms(),
            )
            with contextlib.suppress(ClientError):
                await self._send_direct(self.username, update)

    async def remove_device(self, device_id: int) -> None:
        """Remove a device from the account's signed device list."""
        await self._refresh_devices(self.username)
        current = self.protocol.device_list(self.username)
        if current is None or device_id not in current.device_ids:
            raise ClientError(f"device {device_id} is not on the device list")
        if device_id == self.device_id:
            raise ClientError("a device cannot remove itself")
        signed = current.remove_device(device_id).sign(self.identity.account_key)
        data = await self.http.put_devices(self.username, signed.to_bytes())
        self.protocol.accept_device_list(
            self.username, unb64(data["account_key"]), unb64(data["device_list"])
        )

    # --- groups ------------------------------------------------------------------------

    def groups(self) -> list[GroupInfo]:
        """Groups this device belongs to."""
        out = []
        for group in self.store.list_groups():
            gid = bytes.fromhex(group.group_id)
            epoch = self.protocol.groups.epoch(gid)
            out.append(GroupInfo(group.group_id, group.name, group.members, epoch))
        return out

    def _group(self, group: str) -> tuple[bytes, GroupInfo]:
        """Resolve a group by id, ``group:<id>`` or (unique) name."""
        key = group.removeprefix("group:")
        for info in self.groups():
            if info.group_id == key:
                return bytes.fromhex(info.group_id), info
        named = [info for info in self.groups() if info.name == group]
        if len(named) == 1:
            return bytes.fromhex(named[0].group_id), named[0]
        if len(named) > 1:
            raise GroupError(f"several groups are named {group!r}; use the id")
        raise GroupError(f"unknown group {group!r}")

    async def _announce(
        self,
        group_id: bytes,
        name: str,
        members: tuple[str, ...],
        action: GroupAction,
        extra: Iterable[str] = (),
    ) -> GroupInfo:
        for member in members:
            if member != self.username:
                trust.require_trusted(self.store, member)
        await self._ensure_sessions(set(members) | set(extra) | {self.username})
        update = self.protocol.group_update(group_id, name, members, action)
        await self._send_direct(
            (set(members) | set(extra)) - {self.username} or {self.username}, update
        )
        epoch = self.protocol.groups.epoch(group_id)
        return GroupInfo(group_id.hex(), name, tuple(sorted(set(members))), epoch)

    async def create_group(self, name: str, members: Iterable[str]) -> GroupInfo:
        """Create a group with ``members`` (usernames; we are added)."""
        users = tuple(sorted({*members, self.username}))
        for user in users:
            _check_user(user)
        return await self._announce(new_group_id(), name, users, GroupAction.CREATE)

    async def add_members(self, group: str, members: Iterable[str]) -> GroupInfo:
        """Add members to a group (they receive the full member list)."""
        group_id, info = self._group(group)
        users = tuple(sorted({*info.members, *members}))
        for user in users:
            _check_user(user)
        return await self._announce(group_id, info.name, users, GroupAction.ADD)

    async def remove_members(self, group: str, members: Iterable[str]) -> GroupInfo:
        """Remove members; every remaining member rotates its sender key."""
        group_id, info = self._group(group)
        gone = set(members)
        if self.username in gone:
            raise GroupError("use leave_group to leave")
        users = tuple(sorted(set(info.members) - gone))
        return await self._announce(
            group_id, info.name, users, GroupAction.REMOVE, extra=gone & set(info.members)
        )

    async def leave_group(self, group: str) -> None:
        """Leave a group (the others rotate their sender keys)."""
        group_id, info = self._group(group)
        users = tuple(sorted(set(info.members) - {self.username}))
        await self._announce(group_id, info.name, users, GroupAction.LEAVE, extra=[self.username])

    async def send_group_text(self, group: str, text: str) -> SendResult:
        """Send a text to a group (encrypted once with our sender key)."""
        group_id, _ = self._group(group)
        content = TextContent(text=text, group_id=group_id, sent_at_ms=_now_ms())
        return await self._send_chat(group_conversation(group_id.hex()), content)

    async def send_group_file(
        self, group: str, path: Path | str, *, progress: Progress | None = None
    ) -> SendResult:
        """Send a file to a group."""
        group_id, _ = self._group(group)
        return await self.send_file(group_conversation(group_id.hex()), path, progress=progress)

    # --- link support (used by clients.sdk.linking) ------------------------------------

    def _link_waiter(self) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._link_waiters.append(future)
        return future

    async def _transmit_raw(self, send: OutgoingSend) -> dict[str, Any]:
        return await self._transmit(send)


def _device_bundle(entry: dict[str, Any]) -> DeviceBundle | None:
    spk, lr = entry.get("signed_prekey"), entry.get("last_resort_prekey")
    if not spk or not lr:
        return None

    def signed(x: dict[str, Any]) -> tuple[int, bytes, bytes]:
        return int(x["key_id"]), unb64(x["public_key"]), unb64(x["signature"])

    otk, otpq = entry.get("one_time_prekey"), entry.get("one_time_pq_prekey")
    return DeviceBundle(
        device_id=int(entry["device_id"]),
        identity_key=unb64(entry["identity_key"]),
        signed_prekey=signed(spk),
        last_resort_prekey=signed(lr),
        one_time_prekey=(int(otk["key_id"]), unb64(otk["public_key"])) if otk else None,
        one_time_pq_prekey=signed(otpq) if otpq else None,
    )


def _message_id(value: str | None) -> bytes:
    if value is None:
        return new_message_id()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise ClientError("a message id is 32 hexadecimal digits")
    return raw


def _check_user(username: str) -> None:
    try:
        validate_username(username)
    except VoxError:
        raise UnknownUser(username) from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _remove_profile(home: Path) -> None:
    """Remove what a failed register/join created (never anything else)."""
    for name in ("vox.db", "vox.db-wal", "vox.db-shm", "vox.key", "vox.lock"):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    with contextlib.suppress(OSError):
        home.rmdir()  # only when empty: a directory that held nothing else


_ = (Awaitable, DeliveryState, UntrustedIdentity)

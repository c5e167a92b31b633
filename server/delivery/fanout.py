"""Fan-out of wake-ups and live frames to connected devices.

A relay node keeps at most one WebSocket per device. The :class:`Hub` knows which devices are
connected *to this node* and routes three kinds of signal to them:

* **committed envelopes** (:meth:`Hub.committed`): the node's own group-commit writer has just
  made envelopes durable. A device connected here receives them directly (no database read);
  for devices connected elsewhere a *wake* signal is published.
* **wake** (:meth:`Hub.wake`): "device X has new rows in its queue" — the node holding X's socket
  reads X's queue from the database (the only source of truth) and delivers.
* **frames** (:meth:`Hub.notify`, :meth:`Hub.send_frame`): small live frames that are never stored —
  server notifications (e.g. low prekey stock) and ephemeral sends (typing indicators).

Without Redis the hub is purely in-process (one node). With Redis, every node subscribes to one
pub/sub channel (``<prefix>fanout``) and publishes JSON messages on it:

``{"n": node, "k": "wake", "d": [device_pk, ...]}``
    read the queue of these devices. Sent for signals that carry no envelope (redelivery,
    backlog) and for committed envelopes too large to carry (below).
``{"n": node, "k": "wake", "d": [device_pk, ...], "e": {"<device_pk>": [[seq, tail], ...]}}``
    envelopes node ``n`` has just committed (:meth:`Hub.committed`), carried with the wake-up
    (a commit's envelopes are split over several such messages of at most
    :data:`CARRIED_BYTES` of frames each; a device whose envelopes alone are bigger gets a
    plain wake): each is the ``deliver`` frame of
    queue row ``seq`` (``tail`` is the frame after its ``seq``; the ciphertext envelope is
    already stored, so Redis carries nothing the database does not hold). The node holding a
    device of ``e`` delivers them without reading the database, exactly as if it had
    committed them itself (a connection that is reading its queue, has a backlog or has
    already seen a higher ``seq`` wakes instead, and lets the database decide); ``d`` lists
    every device, so a node that does not know ``e`` still reads the queue.
``{"n": node, "k": "frame", "d": [device_pk, ...], "f": "<frame JSON text>"}``
    push this frame to these devices if connected. Used for notifications and ephemeral sends,
    which are never stored anywhere, so the frame (an ephemeral ciphertext) is the only copy;
    Redis pub/sub does not persist it either.
``{"n": node, "k": "kick", "d": device_pk, "c": connection_id}``
    a newer connection of this device exists on node ``n``: close any other one (4409).
``{"n": node, "k": "drop", "d": device_pk, "r": reason}``
    the device was removed from its account or revoked: close its connection (4401).
    With ``"t": token_id`` (a logout): only if that connection authenticated with that token.

Signals are best effort: a lost wake (or carried envelope) only delays delivery until the
device's next wake or reconnect, because the queue itself lives in the database; acks always
go to the database.

**Redis outage (degraded mode).** A node whose subscription is down or whose Redis stops
answering a ping is *degraded* (:attr:`Hub.degraded`). It then asks the database, every
``poll_interval`` seconds, which devices got queue rows since its last look
(:class:`QueuePoller`: one indexed query on ``delivery_queue.seq``) and wakes those connected
here; on entering the mode it wakes all of them once. Cross-node delivery thus continues
with at most about one poll interval of delay. What Redis alone carries is lost while it is
down: ephemeral frames and notifications to devices on other nodes, "kick" (a device
connected on two nodes keeps both until one closes) and cross-node "drop" (a removed device's
socket on another node closes at its next read of a queue or at reconnect; its token no
longer works). When Redis answers again the node resubscribes, wakes every local device
once and stops polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models_delivery import QueueEntry
from server.delivery.frames import Delivery

log = logging.getLogger("vox.fanout")

_OUTBOX_LIMIT = 10_000
#: Committed envelopes ride along with a cross-node wake-up while the frames of one
#: wake-up total at most this many characters; devices beyond it are only woken.
CARRIED_BYTES = 64 * 1024


class DeviceSink(Protocol):
    """What the hub needs from a device's live connection (see ``server.delivery.connection``)."""

    @property
    def connection_id(self) -> str:
        """A random id, unique per connection, used to tell connections of one device apart."""
        ...

    def wake(self) -> None:
        """New rows may be in the device's queue: read them from the database."""

    def push_committed(self, envelopes: Sequence[Any], *, remote: bool = False) -> None:
        """Envelopes just committed for this device, in queue order (``remote``: by another
        node, carried by Redis)."""

    def push_frame(self, text: str) -> None:
        """Send a live (never stored) frame."""

    def replaced(self) -> None:
        """A newer connection of the same device took over: close with 4409."""

    def revoked(self, reason: str) -> None:
        """The device was removed or revoked: close with 4401."""


class HubObserver(Protocol):
    """Told about this node's connections and about envelopes for devices not connected
    here (the push layer, ``server.push``). Calls are synchronous and must be cheap."""

    def attached(self, device_pk: int) -> None:
        """The device now has a connection on this node."""

    def detached(self, device_pk: int) -> None:
        """The device no longer has a connection on this node."""

    def queued_elsewhere(self, device_pks: Sequence[int]) -> None:
        """Envelopes were just committed for these devices, not connected to this node."""


class QueueCursor(Protocol):
    """Which devices have new queue rows: the database side of the degraded mode."""

    async def latest(self) -> int:
        """The highest queue ``seq`` now (0 for an empty queue)."""
        ...

    async def since(self, seq: int) -> tuple[int, list[int]]:
        """``(highest seq, devices with a row whose seq > seq)``."""
        ...


class QueuePoller:
    """:class:`QueueCursor` over the relay database (``delivery_queue``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def latest(self) -> int:
        """The highest queue ``seq`` now (0 for an empty queue)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(func.max(QueueEntry.seq)))
        return int(value or 0)

    async def since(self, seq: int) -> tuple[int, list[int]]:
        """``(highest seq, devices with a row whose seq > seq)``."""
        query = (
            select(QueueEntry.device_pk, func.max(QueueEntry.seq))
            .where(QueueEntry.seq > seq)
            .group_by(QueueEntry.device_pk)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        top = max((int(r[1]) for r in rows), default=seq)
        return top, [int(r[0]) for r in rows]


class Hub:
    """In-process fan-out, optionally bridged to other nodes through Redis pub/sub."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str = "vox:",
        *,
        poller: QueueCursor | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.node_id = secrets.token_hex(8)
        self._own = f'{{"n":"{self.node_id}",'.encode()
        self._sinks: dict[int, DeviceSink] = {}
        self._redis_url = redis_url
        self._channel = f"{prefix}fanout"
        self._redis: Any = None
        self._outbox: asyncio.Queue[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.dropped_signals = 0
        self.observer: HubObserver | None = None
        self._poller = poller
        self._poll_interval = poll_interval
        self._subscribed = False
        self._degraded = False
        #: Degraded-mode polls run so far (for tests and metrics).
        self.outage_polls = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def distributed(self) -> bool:
        """True when other nodes are reachable through Redis."""
        return self._redis_url is not None

    @property
    def degraded(self) -> bool:
        """True while Redis is configured but unreachable (the node polls the database)."""
        return self._degraded

    async def start(self) -> None:
        """Connect to Redis (if configured) and start the subscriber and publisher tasks."""
        if self._redis_url is None:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self._redis_url)
        self._outbox = asyncio.Queue(maxsize=_OUTBOX_LIMIT)
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._subscriber(ready), name="vox-hub-subscriber"),
            asyncio.create_task(self._publisher(), name="vox-hub-publisher"),
            asyncio.create_task(self._watch(), name="vox-hub-outage-watch"),
        ]
        # Do not serve before the subscription is live, or early wakes could be missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=5)

    async def stop(self) -> None:
        """Stop the Redis tasks (local sinks are closed by their own connections)."""
        self._stopping = True
        if self._outbox is not None:
            # Give queued wakes a brief chance to leave: they point at committed rows.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_outbox(), timeout=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self, within: float = 2.0) -> bool:
        """True if Redis answers within ``within`` seconds (or is not configured)."""
        if self._redis is None:
            return self._redis_url is None
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), within))
        except Exception:
            return False

    async def _watch(self) -> None:
        """Every poll interval: is Redis there? If not, poll the database for new rows."""
        window: list[int] = []  # cursors of the last two polls (rows may commit late)
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                healthy = self._subscribed and await self.ping(within=self._poll_interval)
                if healthy:
                    if self._degraded:
                        self._degraded = False
                        window = []
                        log.warning("redis is back: cross-node wake-ups over pub/sub again")
                        self._wake_all()  # rows committed since the last poll
                    continue
                if not self._degraded:
                    self._degraded = True
                    log.warning(
                        "redis unreachable: degraded mode, polling the database every %.1f s",
                        self._poll_interval,
                    )
                    if self._poller is not None:
                        window = [await self._poller.latest()]
                    self._wake_all()  # wakes lost before the outage was noticed
                    continue
                if self._poller is None:
                    continue
                if not window:
                    window = [await self._poller.latest()]
                top, devices = await self._poller.since(window[0])
                self.outage_polls += 1
                window = [window[-1], max(top, window[-1])]
                for device_pk in devices:
                    sink = self._sinks.get(device_pk)
                    if sink is not None:
                        sink.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outage poll failed: %s", exc.__class__.__name__)

    def _wake_all(self) -> None:
        for sink in list(self._sinks.values()):
            sink.wake()

    async def _drain_outbox(self) -> None:
        assert self._outbox is not None
        await self._outbox.join()

    # -- local registry ----------------------------------------------------------------------

    def attach(self, device_pk: int, sink: DeviceSink) -> None:
        """Register a device's new connection; an older one (here or elsewhere) is replaced."""
        previous = self._sinks.get(device_pk)
        self._sinks[device_pk] = sink
        if self.observer is not None:
            self.observer.attached(device_pk)
        if previous is not None and previous is not sink:
            previous.replaced()
        self._publish({"k": "kick", "d": device_pk, "c": sink.connection_id})

    def detach(self, device_pk: int, sink: DeviceSink) -> None:
        """Forget a connection (only if it is still the registered one)."""
        if self._sinks.get(device_pk) is sink:
            del self._sinks[device_pk]
            self._left(device_pk)

    def _left(self, device_pk: int) -> None:
        if self.observer is not None:
            self.observer.detached(device_pk)

    def local(self, device_pk: int) -> DeviceSink | None:
        """The device's connection on this node, if any."""
        return self._sinks.get(device_pk)

    @property
    def connection_count(self) -> int:
        """Number of devices connected to this node."""
        return len(self._sinks)

    def local_sinks(self) -> list[DeviceSink]:
        """A snapshot of this node's connections."""
        return list(self._sinks.values())

    # -- signals -----------------------------------------------------------------------------

    def committed(self, per_device: Mapping[int, Sequence[Any]]) -> None:
        """Envelopes just committed by this node: hand them to local sockets, wake the others."""
        remote: list[int] = []
        for device_pk, envelopes in per_device.items():
            sink = self._sinks.get(device_pk)
            if sink is not None:
                sink.push_committed(envelopes)
            else:
                remote.append(device_pk)
        if remote:
            if self._outbox is not None:
                self._publish_committed(remote, per_device)
            if self.observer is not None:
                self.observer.queued_elsewhere(remote)

    def _publish_committed(
        self, remote: list[int], per_device: Mapping[int, Sequence[Any]]
    ) -> None:
        """Wake-ups carrying the envelopes, split so that no message carries more than
        :data:`CARRIED_BYTES` of frames; a device whose envelopes alone are bigger is only
        woken (its node reads them from the database)."""
        plain: list[int] = []
        devices: list[int] = []
        carried: dict[str, list[tuple[int, str]]] = {}
        size = 0
        for device_pk in remote:
            rows = [(d.seq, d.tail) for d in per_device[device_pk]]
            need = sum(len(tail) + 16 for _, tail in rows)
            if need > CARRIED_BYTES:
                plain.append(device_pk)
                continue
            if size + need > CARRIED_BYTES:
                self._publish({"k": "wake", "d": devices, "e": carried})
                devices, carried, size = [], {}, 0
            devices.append(device_pk)
            carried[str(device_pk)] = rows
            size += need
        if devices:
            self._publish({"k": "wake", "d": devices, "e": carried})
        if plain:
            self._publish({"k": "wake", "d": plain})

    def wake(self, device_pks: Iterable[int]) -> None:
        """Tell whoever holds these devices' sockets to read their queues."""
        remote: list[int] = []
        for device_pk in device_pks:
            sink = self._sinks.get(device_pk)
            if sink is not None:
                sink.wake()
            else:
                remote.append(device_pk)
        if remote:
            self._publish({"k": "wake", "d": remote})

    def send_frame(self, device_pks: Iterable[int], text: str) -> None:
        """Push a live frame to whichever of these devices are connected (here or elsewhere)."""
        remote: list[int] = []
        for device_pk in device_pks:
            sink = self._sinks.get(device_pk)
            if sink is not None:
                sink.push_frame(text)
            else:
                remote.append(device_pk)
        if remote:
            self._publish({"k": "frame", "d": remote, "f": text})

    async def notify(self, device_pk: int, frame: dict[str, object]) -> None:
        """``DeviceNotifier``: push a server notification frame to a device, wherever it is."""
        self.send_frame([device_pk], json.dumps(frame, separators=(",", ":")))

    async def disconnect(self, device_pk: int, reason: str) -> None:
        """``DeviceNotifier``: close the device's connection (4401 + reason), wherever it is."""
        self._drop_local(device_pk, reason)
        self._publish({"k": "drop", "d": device_pk, "r": reason})

    async def disconnect_token(self, device_pk: int, token_id: int, reason: str) -> None:
        """``DeviceNotifier``: close the device's connection if it used this token (logout)."""
        self._drop_local(device_pk, reason, token_id)
        self._publish({"k": "drop", "d": device_pk, "r": reason, "t": token_id})

    def _drop_local(self, device_pk: int, reason: str, token_id: int | None = None) -> None:
        sink = self._sinks.get(device_pk)
        if sink is None or (token_id is not None and getattr(sink, "token_id", None) != token_id):
            return
        del self._sinks[device_pk]
        self._left(device_pk)
        sink.revoked(reason)

    # -- Redis bridge ------------------------------------------------------------------------

    def _publish(self, message: dict[str, Any]) -> None:
        if self._outbox is None or (self._stopping and message["k"] == "kick"):
            return
        if self._degraded and message["k"] == "wake":
            return  # the other nodes poll the database while Redis is down
        try:
            # "n" first: every node also receives its own messages, and skips them unparsed.
            text = json.dumps({"n": self.node_id, **message}, separators=(",", ":"))
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped_signals += 1
            log.warning("fan-out outbox full, signal dropped", extra={"kind": message["k"]})

    async def _publisher(self) -> None:
        assert self._outbox is not None
        while True:
            text = await self._outbox.get()
            try:
                await self._redis.publish(self._channel, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.dropped_signals += 1
                log.warning("redis publish failed: %s", exc.__class__.__name__)
                await asyncio.sleep(0.2)
            finally:
                self._outbox.task_done()

    async def _subscriber(self, ready: asyncio.Event) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed = True
                ready.set()
                backoff = 0.1
                # Wake-ups may have been lost while we were not subscribed.
                self._wake_all()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception as exc:
                self._subscribed = False
                log.warning("redis subscription lost (%s), retrying", exc.__class__.__name__)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, raw: bytes | str) -> None:
        if (raw if isinstance(raw, bytes) else raw.encode()).startswith(self._own):
            return  # this node's own message (it acted on it when it sent it)
        try:
            message = json.loads(raw)
            if message.get("n") == self.node_id:
                return
            kind = message["k"]
            if kind == "wake":
                carried = message.get("e") or {}
                for device_pk in message["d"]:
                    sink = self._sinks.get(int(device_pk))
                    if sink is None:
                        continue
                    rows = carried.get(str(device_pk))
                    if rows is None:
                        sink.wake()
                    else:
                        envelopes = [Delivery(int(seq), str(tail)) for seq, tail in rows]
                        sink.push_committed(envelopes, remote=True)
            elif kind == "frame":
                text = str(message["f"])
                for device_pk in message["d"]:
                    sink = self._sinks.get(int(device_pk))
                    if sink is not None:
                        sink.push_frame(text)
            elif kind == "drop":
                token = message.get("t")
                self._drop_local(
                    int(message["d"]),
                    str(message["r"])[:100],
                    None if token is None else int(token),
                )
            elif kind == "kick":
                sink = self._sinks.get(int(message["d"]))
                if sink is not None and sink.connection_id != message["c"]:
                    del self._sinks[int(message["d"])]
                    self._left(int(message["d"]))
                    sink.replaced()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed fan-out message (%s)", exc.__class__.__name__)

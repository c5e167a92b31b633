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

Without Redis the hub is purely in-process (one node). With Redis, signals for one device go
only to the node holding its socket:

* **presence**: ``<prefix>at:<device_pk>`` = the id of the node holding the device's socket
  (written when it attaches, before its first queue read, with ``EX presence_ttl``;
  refreshed every ``presence_ttl / 3``, deleted when it leaves if still this node's; a device
  replaced by a newer connection on node ``m`` hands its key to ``m``).
* **attach numbers**: the same script call that writes the key on attach (:data:`_CLAIM`)
  gives the connection the device's next *attach number* (``<prefix>attach:<device_pk>``
  holds the last one for :data:`ATTACH_NUMBER_TTL`): Redis's clock in microseconds, or the
  last number + 1 if that is not higher. Numbers of one device only grow, whichever node
  asks, across node restarts and across a Redis restart (its clock moved on).
* **node channels**: every node subscribes to ``<prefix>node:<node id>``. Wake-ups and live
  frames are *routed*: one Lua script call per signal (:data:`_ROUTE`) reads the devices'
  presence keys and publishes one message per node holding some of them, on that node's
  channel, with only its devices (and only their carried envelopes). A device without a key is
  connected nowhere: nothing is published for it (its queue is read when it connects). A node
  channel with no subscriber means a dead node: the script deletes the stale keys it read.
* **broadcast**: every node also subscribes to ``<prefix>fanout`` for ``kick`` and ``drop``
  (rare, and they must reach a node whatever presence says).

So a node receives, parses and handles only signals for its own devices (plus kicks and
drops), not every node's traffic, and a commit costs its node one Redis call whatever the
number of nodes. Messages (JSON; ``n`` is the sending node):

``{"n": node, "k": "wake", "d": [device_pk, ...]}``
    read the queue of these devices. Sent for signals that carry no envelope (redelivery,
    backlog) and for committed envelopes too large to carry (below).
``{"n": node, "k": "wake", "d": [device_pk, ...], "e": {"<device_pk>": [[seq, tail], ...]}}``
    envelopes node ``n`` has just committed (:meth:`Hub.committed`), carried with the wake-up
    (a device's envelopes ride along while their frames total at most
    :data:`CARRIED_BYTES`; past that the device gets a plain wake): each is the ``deliver``
    frame of queue row ``seq`` (``tail`` is the frame after its ``seq``; the ciphertext
    envelope is already stored, so Redis carries nothing the database does not hold). The
    node holding a device of ``e`` delivers them without reading the database, exactly as if
    it had committed them itself (a connection that is reading its queue, has a backlog or has
    already seen a higher ``seq`` wakes instead, and lets the database decide); ``d`` lists
    every device, so a node that does not know ``e`` still reads the queue.
``{"n": node, "k": "frame", "f": "<frame JSON text>", "d": [device_pk, ...]}``
    push this frame to these devices if connected. Used for notifications and ephemeral sends,
    which are never stored anywhere, so the frame (an ephemeral ciphertext) is the only copy;
    Redis pub/sub does not persist it either.
``{"n": node, "k": "kick", "d": device_pk, "c": connection_id, "a": attach_number}`` (broadcast)
    a connection of this device attached on node ``n`` with this attach number: a node
    holding another connection of the device with a *lower* number closes it (4409) and
    hands the presence key to ``n``; one with a higher number ignores the kick (it is stale:
    an older attach whose kick was still on its way when a newer one attached). A kick
    without ``"a"`` (a node of the previous version, which writes the key after attaching)
    always replaces, and the old node then sends ``n`` a wake for the device.
``{"n": node, "k": "drop", "d": device_pk, "r": reason}`` (broadcast)
    the device was removed from its account or revoked: close its connection (4401).
    With ``"t": token_id`` (a logout): only if that connection authenticated with that token.

**Kicks.** At most one connection of a device stays open, the one that attached last in
Redis's order: a connection is registered only once its claim returned, before ``ready`` is
sent, so a device that connects again after seeing ``ready`` always gets a higher number. A
claim still on its way when a kick with a higher number arrives ends in 4409 at once, and of
two connections of one device on one node the lower number is closed. A kick may arrive
late, or before the connection it is meant for is registered: the numbers decide, not the
order of arrival.

**Why nothing is lost.** A signal is routed by the presence key *after* its rows are committed.
A connection's key is written before its first queue read: a commit routed elsewhere (before
the key) is older than that read, so the read finds it. A key that disappears while its device
is connected (expiry during a stall, Redis restarted or flushed) is put back by the refresh,
which wakes the device; after a lost subscription the node refreshes every key and wakes all
its devices. A node killed with ``-9`` leaves keys that the first signal for one of them
deletes (nobody listens on its channel), or that expire; its devices reconnect elsewhere and
their new node's key replaces the old one.

Signals are best effort: a lost wake (or carried envelope) only delays delivery until the
device's next wake or reconnect, because the queue itself lives in the database; acks always
go to the database. Nodes of the previous scheme (one channel that every node read) are not
woken by these nodes: upgrade all nodes together. Nodes of the version before attach numbers
(per-node channels, kicks without ``"a"``) do work with these, one at a time, but a stale kick
from such a node can still close a newer connection until all are upgraded.

**Redis outage (degraded mode).** A node whose subscription is down or whose Redis stops
answering a ping is *degraded* (:attr:`Hub.degraded`); a device that connects then (or whose
claim takes longer than ``poll_interval``) is registered unclaimed and claimed — then kicked
for and woken — once Redis answers. A degraded node asks the database, every ``poll_interval``
seconds, which devices got queue rows since its last look (:class:`QueuePoller`: one indexed
query on ``delivery_queue.seq``) and wakes those connected here; on entering the mode it wakes
all of them once. Cross-node delivery thus continues with at most about one poll interval of
delay. What Redis alone carries is lost while it is down: ephemeral frames and notifications to
devices on other nodes, "kick" (a device connected on two nodes keeps both until Redis answers:
the connection made during the outage is then claimed, and its kick closes the other) and
cross-node "drop" (a removed device's socket on another node closes at its next read of a queue
or at reconnect; its token no longer works). When Redis answers again the node resubscribes,
writes its presence keys again (Redis may have restarted empty), wakes every local device once,
routes the wake-ups it did not send while degraded (nodes leave the mode one by one: one that
left first no longer polls) and stops polling.
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
#: A device's committed envelopes ride along with its cross-node wake-up while their frames
#: total at most this many characters; past that the device is only woken.
CARRIED_BYTES = 64 * 1024
#: One route call carries at most about this many characters of envelopes (a bigger commit
#: is routed in several calls).
ROUTE_BYTES = 256 * 1024
#: Devices elsewhere remembered for a wake-up after an outage (past that, dropped signals).
_MISSED_LIMIT = 100_000
#: Presence keys refreshed per script call.
_REFRESH_CHUNK = 500

# KEYS[i]: device i's presence key. ARGV[1]: node channel prefix, ARGV[2]: message head
# (``{"n":...,"k":...`` without the closing brace), ARGV[2+i]: device i's pk, ARGV[2+n+i]:
# its carried envelopes as a JSON member (``"pk":[[seq,tail],...]``) or ''. One message per
# node holding some of the devices, on that node's channel; keys of a node nobody listens
# for (a dead node) are deleted. Returns the number of devices a node received.
_ROUTE = """
local n = #KEYS
local nodes, groups = {}, {}
for i = 1, n do
  local node = redis.call('GET', KEYS[i])
  if node then
    local g = groups[node]
    if g == nil then
      g = {{}, {}, {}}
      groups[node] = g
      nodes[#nodes + 1] = node
    end
    g[1][#g[1] + 1] = ARGV[2 + i]
    local carried = ARGV[2 + n + i]
    if carried ~= '' then g[2][#g[2] + 1] = carried end
    g[3][#g[3] + 1] = KEYS[i]
  end
end
local routed = 0
for _, node in ipairs(nodes) do
  local g = groups[node]
  local text = ARGV[2] .. ',"d":[' .. table.concat(g[1], ',') .. ']'
  if #g[2] > 0 then text = text .. ',"e":{' .. table.concat(g[2], ',') .. '}' end
  if redis.call('PUBLISH', ARGV[1] .. node, text .. '}') > 0 then
    routed = routed + #g[1]
  else
    for _, key in ipairs(g[3]) do redis.call('DEL', key) end
  end
end
return routed
"""

# Delete the key only if this node still owns it (another node may hold a newer connection).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A newer connection on node ARGV[2] replaced this node's (ARGV[1]): hand the key over.
_HAND_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 0
"""

# A connection of device KEYS[1] attaches on node ARGV[1]: write its presence key (expiry
# ARGV[2]) and give it the next attach number of the device: Redis's clock in microseconds,
# or the device's last number + 1 if that is not higher (KEYS[2], kept ARGV[3] seconds). The
# numbers of one device only grow, also across a Redis restart (the clock moved on).
_CLAIM = """
local t = redis.call('TIME')
local attach = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if attach <= last then attach = last + 1 end
attach = string.format('%.0f', attach)
redis.call('SET', KEYS[2], attach, 'EX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return attach
"""
#: Seconds a device's last attach number is kept in Redis (past that, Redis's clock alone
#: keeps the numbers growing).
ATTACH_NUMBER_TTL = 86_400

# Refresh this node's keys (ARGV[1], expiry ARGV[2]); a missing one is written again and its
# index returned (wake-ups for that device may have gone nowhere); another node's is left.
_REFRESH = """
local missing = {}
for i, key in ipairs(KEYS) do
  local node = redis.call('GET', key)
  if node == false or node == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
    if node == false then missing[#missing + 1] = i end
  end
end
return missing
"""


class _Route:
    """A signal to route by presence: ``head`` (the message without ``d``/``e``), the devices
    and their carried envelopes (JSON members, ``""`` for none)."""

    __slots__ = ("carried", "devices", "head", "wake")

    def __init__(self, head: str, devices: list[int], carried: list[str], *, wake: bool) -> None:
        self.head = head
        self.devices = devices
        self.carried = carried
        self.wake = wake


#: What the publisher sends: a broadcast message, ``(channel, message)`` or a route.
_Outgoing = str | tuple[str, str] | _Route


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
        presence_ttl: float = 60.0,
    ) -> None:
        self.node_id = secrets.token_hex(8)
        self._own = f'{{"n":"{self.node_id}",'.encode()
        self._sinks: dict[int, DeviceSink] = {}
        #: The attach number of each registered connection (None: not claimed in Redis yet).
        self._attach: dict[int, int | None] = {}
        #: Devices with a claim on its way to Redis here: how many, and the highest attach
        #: number a kick named meanwhile (a newer connection elsewhere).
        self._claims: dict[int, int] = {}
        self._kicked: dict[int, int] = {}
        self._redis_url = redis_url
        self._channel = f"{prefix}fanout"
        self._node_prefix = f"{prefix}node:"
        self._node_channel = f"{prefix}node:{self.node_id}"
        self._presence_prefix = f"{prefix}at:"
        self._attach_prefix = f"{prefix}attach:"
        self._presence_ttl = max(1, round(presence_ttl))
        self._redis: Any = None
        self._route: Any = None
        self._claim: Any = None
        self._outbox: asyncio.Queue[_Outgoing] | None = None
        #: Presence writes in order: (pk, sink to claim for, then kick for and wake) /
        #: (pk, None) = release / (pk, node id) = hand over to that node.
        self._presence: asyncio.Queue[tuple[int, DeviceSink | str | None]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.dropped_signals = 0
        self.observer: HubObserver | None = None
        self._poller = poller
        self._poll_interval = poll_interval
        self._subscribed = False
        self._degraded = False
        #: Devices elsewhere whose wake-ups were not sent while degraded (see :meth:`_send`).
        self._missed: set[int] = set()
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
        self._route = self._redis.register_script(_ROUTE)
        self._claim = self._redis.register_script(_CLAIM)
        self._outbox = asyncio.Queue(maxsize=_OUTBOX_LIMIT)
        self._presence = asyncio.Queue()
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._subscriber(ready), name="vox-hub-subscriber"),
            asyncio.create_task(self._publisher(), name="vox-hub-publisher"),
            asyncio.create_task(self._presence_writer(), name="vox-hub-presence"),
            asyncio.create_task(self._refresher(), name="vox-hub-presence-refresh"),
            asyncio.create_task(self._watch(), name="vox-hub-outage-watch"),
        ]
        # Do not serve before the subscription is live, or early wakes could be missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=5)

    async def stop(self) -> None:
        """Stop the Redis tasks (local sinks are closed by their own connections)."""
        self._stopping = True
        if self._outbox is not None:
            # Give queued wakes a brief chance to leave: they point at committed rows. And
            # presence releases: the next signals then skip this node.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled(), timeout=1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def settled(self) -> None:
        """Every signal and presence write queued so far has been sent to Redis."""
        if self._outbox is not None:
            await self._outbox.join()
        if self._presence is not None:
            await self._presence.join()

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
                        # Wake-ups this node skipped: a node that left (or never entered) the
                        # degraded mode before this one does not poll for them.
                        missed, self._missed = self._missed, set()
                        self.wake(missed)
                        await self._refresh()  # (the subscriber did it too, unless it failed)
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

    # -- local registry ----------------------------------------------------------------------

    async def attach(self, device_pk: int, sink: DeviceSink) -> bool:
        """Register a device's new connection; an older one (here or elsewhere) is replaced.

        With Redis the connection is first *claimed* (one script call, :data:`_CLAIM`): its
        presence key is written and it gets the device's next attach number, which the kick
        to the other nodes carries; a node ignores a kick older than the connection it holds
        (see "Kicks"). The connection's first queue read comes after this returns, so a signal
        routed before its key is found by that read. If Redis is down or slow (more than
        ``poll_interval``), the connection is registered unclaimed and claimed (then kicked
        for and woken) once Redis answers. Returns False if the connection was replaced at
        once (a newer one of the device claimed meanwhile, here or elsewhere)."""
        attach: int | None = None
        if self._claim is not None and not self._degraded and not self._stopping:
            self._claims[device_pk] = self._claims.get(device_pk, 0) + 1
            try:
                attach = await asyncio.wait_for(
                    self._claim_one(device_pk), max(self._poll_interval, 0.1)
                )
            except Exception as exc:
                log.warning("presence claim failed: %s", exc.__class__.__name__)
            finally:
                left = self._claims.pop(device_pk) - 1
                newer = self._kicked.get(device_pk, 0)
                if left:
                    self._claims[device_pk] = left
                else:
                    self._kicked.pop(device_pk, None)
            if attach is not None and newer > attach:
                sink.replaced()  # a newer connection elsewhere claimed after this one
                return False
        previous = self._sinks.get(device_pk)
        if previous is not None and previous is not sink:
            before = self._attach.get(device_pk)
            if attach is not None and before is not None and before > attach:
                sink.replaced()  # this node's other connection claimed after this one
                return False
            previous.replaced()
        self._sinks[device_pk] = sink
        self._attach[device_pk] = attach
        if self.observer is not None:
            self.observer.attached(device_pk)
        if attach is not None:
            self._kick(device_pk, sink, attach)
        elif self._presence is not None and not self._stopping:
            self._presence.put_nowait((device_pk, sink))
        return True

    async def _claim_one(self, device_pk: int) -> int:
        keys = [f"{self._presence_prefix}{device_pk}", f"{self._attach_prefix}{device_pk}"]
        args = [self.node_id, self._presence_ttl, ATTACH_NUMBER_TTL]
        return int(await self._claim(keys=keys, args=args))

    def _kick(self, device_pk: int, sink: DeviceSink, attach: int) -> None:
        self._publish({"k": "kick", "d": device_pk, "c": sink.connection_id, "a": attach})

    def detach(self, device_pk: int, sink: DeviceSink) -> None:
        """Forget a connection (only if it is still the registered one)."""
        if self._sinks.get(device_pk) is sink:
            self._forget(device_pk)
            self._left(device_pk)

    def _forget(self, device_pk: int) -> None:
        del self._sinks[device_pk]
        self._attach.pop(device_pk, None)
        if device_pk not in self._claims:
            self._kicked.pop(device_pk, None)

    def _left(self, device_pk: int, successor: str | None = None) -> None:
        if self.observer is not None:
            self.observer.detached(device_pk)
        if self._presence is not None:
            self._presence.put_nowait((device_pk, successor))

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
                self._route_committed(remote, per_device)
            if self.observer is not None:
                self.observer.queued_elsewhere(remote)

    def _route_committed(self, remote: list[int], per_device: Mapping[int, Sequence[Any]]) -> None:
        """Wake-ups carrying the envelopes (a device whose frames total more than
        :data:`CARRIED_BYTES` is only woken), in route calls of about :data:`ROUTE_BYTES`."""
        head = f'{{"n":"{self.node_id}","k":"wake"'
        devices: list[int] = []
        carried: list[str] = []
        size = 0
        dumps = json.dumps
        for device_pk in remote:
            rows = [[d.seq, d.tail] for d in per_device[device_pk]]
            need = sum(len(row[1]) + 16 for row in rows)
            member = ""
            if need <= CARRIED_BYTES:
                member = f'"{device_pk}":{dumps(rows, separators=(",", ":"))}'
            if devices and size + len(member) > ROUTE_BYTES:
                self._send(_Route(head, devices, carried, wake=True))
                devices, carried, size = [], [], 0
            devices.append(device_pk)
            carried.append(member)
            size += len(member)
        self._send(_Route(head, devices, carried, wake=True))

    def wake(self, device_pks: Iterable[int]) -> None:
        """Tell whoever holds these devices' sockets to read their queues."""
        remote: list[int] = []
        for device_pk in device_pks:
            sink = self._sinks.get(device_pk)
            if sink is not None:
                sink.wake()
            else:
                remote.append(device_pk)
        if remote and self._outbox is not None:
            head = f'{{"n":"{self.node_id}","k":"wake"'
            self._send(_Route(head, remote, [""] * len(remote), wake=True))

    def send_frame(self, device_pks: Iterable[int], text: str) -> None:
        """Push a live frame to whichever of these devices are connected (here or elsewhere)."""
        remote: list[int] = []
        for device_pk in device_pks:
            sink = self._sinks.get(device_pk)
            if sink is not None:
                sink.push_frame(text)
            else:
                remote.append(device_pk)
        if remote and self._outbox is not None:
            head = f'{{"n":"{self.node_id}","k":"frame","f":{json.dumps(text)}'
            self._send(_Route(head, remote, [""] * len(remote), wake=False))

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
        self._forget(device_pk)
        self._left(device_pk)
        sink.revoked(reason)

    # -- Redis bridge ------------------------------------------------------------------------

    def _publish(self, message: dict[str, Any]) -> None:
        """A message for every node (``kick``, ``drop``) on the broadcast channel."""
        if self._outbox is None or (self._stopping and message["k"] == "kick"):
            return
        # "n" first: every node also receives its own messages, and skips them unparsed.
        self._send(json.dumps({"n": self.node_id, **message}, separators=(",", ":")))

    def _send(self, item: _Outgoing) -> None:
        assert self._outbox is not None
        if self._degraded and isinstance(item, _Route) and item.wake:
            # Not sent while Redis is down (nodes that are degraded too poll the database);
            # remembered, and routed once this node is back, for nodes that were not.
            if len(self._missed) < _MISSED_LIMIT:
                self._missed.update(item.devices)
            else:
                self.dropped_signals += 1
            return
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped_signals += 1
            log.warning("fan-out outbox full, signal dropped")

    async def _publisher(self) -> None:
        assert self._outbox is not None
        prefix = self._presence_prefix
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, str):
                    await self._redis.publish(self._channel, item)
                elif isinstance(item, tuple):
                    await self._redis.publish(*item)
                else:
                    await self._route(
                        keys=[f"{prefix}{pk}" for pk in item.devices],
                        args=[self._node_prefix, item.head, *item.devices, *item.carried],
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.dropped_signals += 1
                log.warning("redis publish failed: %s", exc.__class__.__name__)
                await asyncio.sleep(0.2)
            finally:
                self._outbox.task_done()

    # -- presence ----------------------------------------------------------------------------

    async def _presence_writer(self) -> None:
        """Write presence changes in order, as many as are queued in one round trip. A
        connection registered unclaimed is claimed, then kicked for and woken (a signal
        routed before its key is found by that read)."""
        assert self._presence is not None
        queue = self._presence
        ttl = self._presence_ttl
        while True:
            ops = [await queue.get()]
            while not queue.empty():
                ops.append(queue.get_nowait())
            try:
                claims: list[tuple[int, DeviceSink, int]] = []  # (pk, sink, result index)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for pk, what in ops:
                        key = f"{self._presence_prefix}{pk}"
                        if what is None:
                            pipe.eval(_RELEASE, 1, key, self.node_id)
                        elif isinstance(what, str):
                            pipe.eval(_HAND_OVER, 1, key, self.node_id, what, ttl)
                        elif self._unclaimed(pk, what) and all(c[1] is not what for c in claims):
                            claims.append((pk, what, len(pipe)))
                            attach_key = f"{self._attach_prefix}{pk}"
                            args = (self.node_id, ttl, ATTACH_NUMBER_TTL)
                            pipe.eval(_CLAIM, 2, key, attach_key, *args)
                    results = await pipe.execute() if len(pipe) else []
                for pk, sink, index in claims:
                    if not self._unclaimed(pk, sink):
                        continue
                    attach = int(results[index])
                    if self._kicked.pop(pk, 0) > attach:  # claimed after this one
                        self._forget(pk)
                        self._left(pk)
                        sink.replaced()
                        continue
                    self._attach[pk] = attach
                    self._kick(pk, sink, attach)
                    sink.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The refresh after the outage writes the keys again and wakes the devices.
                log.warning("presence write failed: %s", exc.__class__.__name__)
            finally:
                for _ in ops:
                    queue.task_done()

    def _unclaimed(self, device_pk: int, sink: DeviceSink) -> bool:
        """The device's registered connection is ``sink`` and has no attach number yet."""
        return self._sinks.get(device_pk) is sink and self._attach.get(device_pk) is None

    async def _refresher(self) -> None:
        pause = self._presence_ttl / 3
        while True:
            await asyncio.sleep(pause)
            try:
                await self._refresh()
                pause = self._presence_ttl / 3
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("presence refresh failed: %s", exc.__class__.__name__)
                pause = min(1.0, self._presence_ttl / 3)  # soon again

    async def _refresh(self) -> None:
        """Extend this node's presence keys; write missing ones again and wake their
        devices (a wake-up routed while the key was missing went nowhere). Connections
        registered unclaimed (Redis was down) are claimed (:meth:`_presence_writer`)."""
        if self._presence is not None:
            for pk, attach in self._attach.items():
                if attach is None:
                    self._presence.put_nowait((pk, self._sinks[pk]))
        pks = list(self._sinks)
        for i in range(0, len(pks), _REFRESH_CHUNK):
            chunk = pks[i : i + _REFRESH_CHUNK]
            keys = [f"{self._presence_prefix}{pk}" for pk in chunk]
            missing = await self._redis.eval(
                _REFRESH, len(keys), *keys, self.node_id, self._presence_ttl
            )
            for index in missing or []:
                sink = self._sinks.get(chunk[int(index) - 1])
                if sink is not None:
                    sink.wake()

    # -- subscription ------------------------------------------------------------------------

    async def _subscriber(self, ready: asyncio.Event) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel, self._node_channel)
                # Redis has the subscription once it counts us (another node finding nobody
                # on our channel deletes our keys, so they are written after this).
                for _ in range(100):
                    counts = await self._redis.pubsub_numsub(self._node_channel)
                    if counts and int(counts[0][1]) > 0:
                        break
                    await asyncio.sleep(0.02)
                # Other nodes deleted our keys if they found nobody on our channel, and Redis
                # may have restarted empty: write them again (failing that, subscribe again),
                # then read every queue (wake-ups may have been lost while we were away).
                await self._refresh()
                self._subscribed = True
                ready.set()
                backoff = 0.1
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

    def _kicked_by(self, message: Mapping[str, Any]) -> None:
        """A connection of the device attached on node ``n``: replace this node's, unless
        this one is newer (a higher attach number: the kick is stale)."""
        device_pk = int(message["d"])
        attach = message.get("a")
        if attach is not None:
            attach = int(attach)
            if device_pk in self._claims:  # decided when this node's claim returns
                self._kicked[device_pk] = max(attach, self._kicked.get(device_pk, 0))
        sink = self._sinks.get(device_pk)
        if sink is None or sink.connection_id == message["c"]:
            return
        mine = self._attach.get(device_pk)
        if attach is not None:
            if mine is None:
                # Not claimed yet (Redis was down): its claim will outnumber every kick sent
                # so far; one that outnumbers the claim closes it when the claim returns.
                self._kicked[device_pk] = max(attach, self._kicked.get(device_pk, 0))
                return
            if mine > attach:
                return  # a stale kick: the connection here claimed after it
        node = str(message["n"])
        self._forget(device_pk)
        self._left(device_pk, node)
        sink.replaced()
        if attach is None and self._outbox is not None:
            # A kick without an attach number (a node of the previous version wrote its key
            # after attaching): envelopes routed here before the hand-over may have gone to
            # the old socket, so the new connection's node reads the queue.
            wake = json.dumps({"n": self.node_id, "k": "wake", "d": [device_pk]})
            self._send((f"{self._node_prefix}{node}", wake))

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
                self._kicked_by(message)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed fan-out message (%s)", exc.__class__.__name__)

"""Sending content-free pushes to devices that are offline (RFC 8030 delivery).

The delivery hub calls :meth:`PushDispatcher.queued_elsewhere` right after a commit, with the
devices that got envelopes and have no connection on this node (and, through
:meth:`PushDispatcher.detached`, ``detach_recheck_seconds`` after a device's connection ended,
so that envelopes it was sent but never acked still notify it). That call only adds them to a
set (never blocks, never touches the database); a background task then, outside any write
transaction:

1. drops devices connected on another node (:class:`~server.push.presence.Presence`);
2. reads their subscriptions — only for devices that still hold an envelope from another user
   (``repository.targets``);
3. claims the device's coalescing window (one push per ``push.coalesce_seconds``);
4. resolves the endpoint's host **once**, refuses it unless every address is public (or
   loopback, when ``allow_loopback`` is set for tests), and connects to the address it checked
   (DNS pinning: the URL's host is replaced by that address, the name travels in ``Host`` and
   as the TLS SNI / certificate name), so a name that rebinds to an internal address between
   the check and the connection cannot make the relay POST inside the operator's network;
5. POSTs the RFC 8291-encrypted fixed payload to every subscription, with ``TTL``,
   ``Urgency``, ``Topic`` and a VAPID ``Authorization``; 404/410 deletes the subscription;
   429, 5xx and network errors are retried up to ``push.max_attempts`` times (honouring
   ``Retry-After`` up to a minute); anything else is logged and dropped.

Logs name only the push service's origin (``https://host``), never the endpoint path (a
capability) or keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.clock import Clock
from server.db.engine import write_lock
from server.logs import log_event
from server.metrics import CollectorRegistry, Counter
from server.push import repository as repo
from server.push.presence import Coalescer, Presence
from server.push.vapid import CONTENT_ENCODING, VapidKey, encrypt_payload

if TYPE_CHECKING:
    import httpx

__all__ = ["TOPIC", "PinnedRequest", "PushConfig", "PushDispatcher", "Resolver", "system_resolver"]

#: ``(host, port) -> getaddrinfo`` results; the dispatcher's DNS (tests substitute their own).
Resolver = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]


async def system_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    """The system resolver (``getaddrinfo``, TCP), off the event loop's thread."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP)


@dataclass(frozen=True, slots=True)
class PinnedRequest:
    """Where a push goes: the endpoint with its host replaced by the checked address."""

    url: str
    host_header: str
    sni_hostname: str


#: RFC 8030 ``Topic``: a newer push replaces an undelivered older one at the push service.
TOPIC = "new-messages"
_BATCH = 500
_MAX_PENDING = 100_000
#: Pushes being sent or waiting for a retry; beyond this new ones are dropped (logged).
_MAX_INFLIGHT = 10_000


@dataclass(frozen=True, slots=True)
class PushConfig:
    """How pushes are sent (from ``settings.push``; tests may shorten the retry delays)."""

    ttl_seconds: int = 86400
    urgency: str = "normal"
    request_timeout: float = 10.0
    max_attempts: int = 3
    allow_loopback: bool = False
    concurrency: int = 16
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    #: After a device's connection ends, look again this much later: envelopes it was sent
    #: but did not ack (a socket that died) still deserve a push.
    detach_recheck_seconds: float = 2.0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "vox_push_requests",
            "Push requests by outcome (sent, gone, retry, failed, refused, dropped)",
            ["outcome"],
            registry=registry,
        )
        self.coalesced = Counter(
            "vox_push_coalesced",
            "Pushes skipped inside a device's coalescing window",
            registry=registry,
        )


def origin_of(endpoint: str) -> str:
    """``scheme://host[:port]`` of an endpoint: the VAPID audience and what logs may show."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class PushDispatcher:
    """This node's push sender; also the hub's observer (presence + queued envelopes)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vapid: VapidKey,
        config: PushConfig,
        presence: Presence,
        coalescer: Coalescer,
        registry: CollectorRegistry,
        *,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.vapid = vapid
        self.config = config
        self.presence = presence
        self._coalescer = coalescer
        self._metrics = _Metrics(registry)
        self._pending: set[int] = set()
        self._wakeup = asyncio.Event()
        self._busy = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._rechecks: dict[int, asyncio.TimerHandle] = {}
        #: DNS used to resolve push endpoints (each attempt resolves once and pins).
        self.resolve: Resolver = system_resolver

    # -- hub observer (synchronous, cheap) ---------------------------------------------------

    def attached(self, device_pk: int) -> None:
        """A device connected to this node."""
        self.presence.attached(device_pk)

    def detached(self, device_pk: int) -> None:
        """A device's connection on this node is gone (unacked envelopes get a push later)."""
        self.presence.detached(device_pk)
        if self._task is None or len(self._rechecks) >= _MAX_PENDING:
            return
        previous = self._rechecks.pop(device_pk, None)
        if previous is not None:
            previous.cancel()
        self._rechecks[device_pk] = asyncio.get_running_loop().call_later(
            self.config.detach_recheck_seconds, self._recheck, device_pk
        )

    def _recheck(self, device_pk: int) -> None:
        self._rechecks.pop(device_pk, None)
        self.queued_elsewhere([device_pk])

    def queued_elsewhere(self, device_pks: Iterable[int]) -> None:
        """Envelopes were committed for devices not connected to this node."""
        if len(self._pending) >= _MAX_PENDING:
            log_event("push_backlog_full", logging.WARNING)
            return
        self._pending.update(device_pks)
        self._wakeup.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the presence tasks and the worker (the HTTP client opens with the first
        push: a relay whose users never subscribe does not load ``httpx``)."""
        await self.presence.start()
        self._task = asyncio.create_task(self._run(), name="vox-push-worker")

    async def stop(self) -> None:
        """Stop the worker, abandon pushes still being sent, close the client."""
        for timer in self._rechecks.values():
            timer.cancel()
        self._rechecks.clear()
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        await self.presence.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drained(self) -> None:
        """Wait until every device handed over so far has been handled (tests)."""
        await self.presence.settled()
        while self._rechecks or self._pending or self._busy or self._inflight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # -- worker ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                self._busy = True
                batch = [self._pending.pop() for _ in range(min(_BATCH, len(self._pending)))]
                try:
                    await self._handle(batch)
                except Exception as exc:  # keep the worker alive; never log parameters
                    log_event("push_batch_failed", logging.WARNING, error=exc.__class__.__name__)
                finally:
                    self._busy = False

    async def _handle(self, device_pks: list[int]) -> None:
        online = await self.presence.connected(device_pks)
        offline = [pk for pk in device_pks if pk not in online]
        if not offline:
            return
        async with self._sessions() as session:
            targets = await repo.targets(session, offline)
        per_device: dict[int, list[repo.Target]] = {}
        for target in targets:
            per_device.setdefault(target.device_pk, []).append(target)
        for device_pk, subs in per_device.items():
            if not await self._coalescer.claim(device_pk):
                self._metrics.coalesced.inc()
                continue
            for target in subs:
                if len(self._inflight) >= _MAX_INFLIGHT:
                    self._metrics.requests.labels("dropped").inc()
                    log_event("push_dropped", logging.WARNING, reason="too many pushes in flight")
                    continue
                task = asyncio.create_task(self._deliver(target), name="vox-push-send")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.request_timeout),
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=self.config.concurrency * 2),
            )
        return self._client

    async def _deliver(self, target: repo.Target) -> None:
        import httpx

        origin = origin_of(target.endpoint)
        cfg = self.config
        for attempt in range(1, cfg.max_attempts + 1):
            delay = min(cfg.retry_max_seconds, cfg.retry_base_seconds * 2 ** (attempt - 1))
            try:
                async with self._slots:
                    pinned = await self.pin(target.endpoint)
                    if pinned is None:
                        self._metrics.requests.labels("refused").inc()
                        log_event(
                            "push_refused",
                            logging.WARNING,
                            origin=origin,
                            reason="endpoint resolves to a non-public address",
                        )
                        return
                    status, retry_after = await self._post(target, origin, pinned)
            except httpx.HTTPError as exc:
                outcome = f"network error {exc.__class__.__name__}"
            else:
                if 200 <= status < 300:
                    self._metrics.requests.labels("sent").inc()
                    log_event("push_sent", origin=origin, status=status, attempt=attempt)
                    return
                if status in (404, 410):
                    await self._forget(target)
                    self._metrics.requests.labels("gone").inc()
                    log_event("push_subscription_gone", origin=origin, status=status)
                    return
                if status != 429 and status < 500:
                    self._metrics.requests.labels("failed").inc()
                    log_event("push_failed", logging.WARNING, origin=origin, status=status)
                    return
                outcome = f"status {status}"
                if retry_after is not None:
                    delay = min(cfg.retry_max_seconds, retry_after)
            if attempt == cfg.max_attempts:
                self._metrics.requests.labels("failed").inc()
                log_event(
                    "push_failed", logging.WARNING, origin=origin, error=outcome, attempts=attempt
                )
                return
            self._metrics.requests.labels("retry").inc()
            await asyncio.sleep(delay)

    async def _post(
        self, target: repo.Target, origin: str, pinned: PinnedRequest
    ) -> tuple[int, float | None]:
        client = self._http()
        await self.vapid.ready()  # the first push reads the key file off the event loop
        headers = {
            "TTL": str(self.config.ttl_seconds),
            "Urgency": self.config.urgency,
            "Topic": TOPIC,
            "Content-Encoding": CONTENT_ENCODING,
            "Content-Type": "application/octet-stream",
            "Authorization": self.vapid.authorization(origin, now=self._clock.now()),
            "Host": pinned.host_header,
        }
        # ~1 ms of CPU (a fresh P-256 key, ECDH, HKDF): off the event loop thread.
        body = await asyncio.to_thread(encrypt_payload, target.p256dh, target.auth)
        # Read the status only: a hostile endpoint cannot make the relay buffer a body.
        extensions = {"sni_hostname": pinned.sni_hostname}
        async with client.stream(
            "POST", pinned.url, content=body, headers=headers, extensions=extensions
        ) as resp:
            return resp.status_code, _retry_after(resp.headers.get("retry-after"))

    async def pin(self, endpoint: str) -> PinnedRequest | None:
        """Resolve the endpoint's host once; ``None`` (refused) unless every address is public
        (or loopback when allowed). The request then goes to the first address, so what was
        checked is what is contacted. A failed lookup raises ``httpx.ConnectError`` (retried
        like any network error)."""
        import httpx

        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await self.resolve(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"could not resolve the push service: {exc}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        allowed = [a.is_global or (self.config.allow_loopback and a.is_loopback) for a in addresses]
        if not addresses or not all(allowed):
            return None
        first = addresses[0]
        literal = f"[{first}]" if first.version == 6 else str(first)
        url = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, ""))
        return PinnedRequest(url, parts.netloc.rpartition("@")[2], host)

    async def _forget(self, target: repo.Target) -> None:
        async with self._sessions() as session:
            await write_lock(session)
            await repo.delete_by_pk(session, target.pk)
            await session.commit()


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())

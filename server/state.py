"""What the relay's layers share, in one typed container: :class:`RelayState`.

``create_app(settings)`` builds it and stores it as ``app.state.relay`` — the only attribute
on Starlette's untyped ``app.state``. Routes take it (or one of its parts) through the
``Annotated`` dependencies of :mod:`server.deps`; lifespans, the WebSocket endpoint and
tests use :func:`relay_state`. Its parts, and who sets them:

=======================  =====================================================  ==============
part                     what                                                   set by
=======================  =====================================================  ==============
``settings``             :class:`~server.settings.Settings`                      ``create_app``
``clock``                :class:`~server.clock.Clock`, the relay's one clock     ``create_app``
``metrics``              :class:`~server.metrics.Metrics` (its ``registry``)     ``create_app``
``limiters``             the REST rate limiters (:class:`RateLimiters`)          ``create_app``,
                                                                                 shared through
                                                                                 Redis at start
``disk``                 :class:`~server.diskguard.DiskGuard`                    ``create_app``
``lifespan_hooks``       the feature layers' startup/shutdown                    ``create_app``
``notifier``             :class:`~server.notify.DeviceNotifier` (no-op until     delivery
                         the delivery hub replaces it)
``engine``, ``sessions`` the database (``AsyncEngine``, session factory)         the lifespan
``redis``                ``redis.asyncio.Redis`` or ``None``                     the lifespan
``hub``, ``delivery``    :class:`~server.delivery.fanout.Hub`,                   delivery
                         :class:`~server.delivery.service.DeliveryService`
``attachments``          :class:`~server.attachments.service.AttachmentService`  attachments
``login_db``             :class:`~server.db.onehop.OneHop` (login transactions)  auth lifespan
``push``                 :class:`~server.push.sender.PushDispatcher` or ``None``  push
                         (push disabled)
``connection_guard``     :class:`~server.edge.connections.ConnectionGuard`       ``uvicorn_config``
=======================  =====================================================  ==============

Reading a part that the lifespan sets before it has run raises :class:`NotStarted`.
``delivery_overrides``, ``push_overrides`` and ``auth_sweep_interval`` let tests and
benchmarks tune internal bounds before the app starts.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from starlette.applications import Starlette

from server.clock import Clock
from server.diskguard import DiskGuard
from server.metrics import Metrics
from server.notify import DeviceNotifier, NullNotifier
from server.ratelimit import Limiter
from server.settings import Settings

if TYPE_CHECKING:  # the parts' types; the _SetAtStartup["..."] below name some of them
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import (  # noqa: F401
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
    )

    from server.attachments.service import AttachmentService  # noqa: F401
    from server.db.onehop import OneHop  # noqa: F401
    from server.delivery.fanout import Hub  # noqa: F401
    from server.delivery.service import DeliveryService  # noqa: F401
    from server.edge.connections import ConnectionGuard, GuardCollector
    from server.push.sender import PushDispatcher

__all__ = ["LifespanHook", "NotStarted", "RateLimiters", "RelayState", "relay_state"]

T = TypeVar("T")

#: A feature's startup/shutdown: ``async with hook(app): ...`` spans the app's life.
LifespanHook = Callable[["FastAPI"], AbstractAsyncContextManager[None]]


class NotStarted(RuntimeError):
    """A part of the relay's state that its lifespan sets was read before startup."""


class _SetAtStartup(Generic[T]):
    """A part of :class:`RelayState` that a lifespan sets; reading it earlier raises
    :class:`NotStarted`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _SetAtStartup[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> T | _SetAtStartup[T]:
        if obj is None:
            return self
        value: T | None = obj.__dict__.get(self.name)
        if value is None:
            raise NotStarted(f"RelayState.{self.name} is set when the app starts (its lifespan)")
        return value

    def __set__(self, obj: object, value: T) -> None:
        obj.__dict__[self.name] = value


@dataclass(slots=True, eq=False)
class RateLimiters:
    """The per-address and per-device limits of the REST API (429 ``rate_limited``)."""

    #: Every REST request, by client address (``requests_per_minute_per_ip``).
    ip: Limiter
    #: Prekey bundle fetches, by device.
    bundle: Limiter
    #: Login challenges, by client address.
    challenge: Limiter
    #: Registrations, by client address.
    registration: Limiter


@dataclass(eq=False)
class RelayState:
    """The relay's shared state (see the module docstring for each part)."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    limiters: RateLimiters
    disk: DiskGuard
    lifespan_hooks: list[LifespanHook] = field(default_factory=list)
    notifier: DeviceNotifier = field(default_factory=NullNotifier)
    #: ``redis.asyncio.Redis`` when ``redis_url`` is set (after startup), else ``None``.
    redis: Any = None
    #: The push dispatcher, or ``None`` while push is disabled (routes answer 404).
    push: PushDispatcher | None = None
    connection_guard: ConnectionGuard | None = None
    guard_collector: GuardCollector | None = None
    #: ``DeliveryConfig`` fields to override (tests and benchmarks).
    delivery_overrides: dict[str, Any] = field(default_factory=dict)
    #: ``PushConfig`` fields to override (tests).
    push_overrides: dict[str, Any] = field(default_factory=dict)
    #: Seconds between sweeps of expired challenges and tokens.
    auth_sweep_interval: float = 600.0

    #: The database engine.
    engine = _SetAtStartup["AsyncEngine"]()
    #: The ``AsyncSession`` factory on :attr:`engine`.
    sessions = _SetAtStartup["async_sessionmaker[AsyncSession]"]()
    #: This node's fan-out hub (its connected devices; Redis pub/sub between nodes).
    hub = _SetAtStartup["Hub"]()
    #: The delivery service (WebSocket connections, the group-commit writers).
    delivery = _SetAtStartup["DeliveryService"]()
    #: The attachment service (uploads, downloads, expiry).
    attachments = _SetAtStartup["AttachmentService"]()
    #: Runs the login transactions (challenge, token) in one hand-off each.
    login_db = _SetAtStartup["OneHop"]()


def relay_state(app: Starlette) -> RelayState:
    """The :class:`RelayState` of an app built by ``create_app``."""
    state = app.state.relay
    if not isinstance(state, RelayState):  # pragma: no cover - only create_app stores it
        raise TypeError("app.state.relay is not a RelayState (build the app with create_app)")
    return state

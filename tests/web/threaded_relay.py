"""A relay in the test's own process (uvicorn on loopback, on an event loop in a thread of its
own), for browser tests that reach into the relay while the page runs: shift its clock, close
a socket, intercept the frames it reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from server.app import create_app
from server.clock import ShiftedClock
from server.state import relay_state
from tests.server.relay_harness import Relay, make_settings, running_relay

T = TypeVar("T")


class ThreadedRelay:
    """A relay (``running_relay``) on an event loop in a background thread; ``limits`` and
    ``overrides`` (``delivery_overrides``) as in the relay harness."""

    def __init__(
        self,
        tmp_path: Path,
        clock: ShiftedClock | None = None,
        limits: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = make_settings(tmp_path, limits=limits or {})
        self.app = create_app(self.settings, clock=clock or ShiftedClock())
        relay_state(self.app).delivery_overrides.update(overrides or {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = running_relay(self.settings, app=self.app)
        self.relay: Relay = self.run(self._cm.__aenter__())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    @property
    def url(self) -> str:
        return self.relay.base_url

    def close(self) -> None:
        try:
            self.run(self._cm.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()

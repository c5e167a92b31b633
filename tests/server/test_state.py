"""The relay's typed state: parts set at startup refuse to be read before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import create_app
from server.state import NotStarted, relay_state
from tests.server.relay_harness import make_settings, running_relay


def test_a_part_set_at_startup_cannot_be_read_before_it(tmp_path: Path) -> None:
    one = relay_state(create_app(make_settings(tmp_path)))
    two = relay_state(create_app(make_settings(tmp_path)))
    with pytest.raises(NotStarted, match=r"RelayState\.engine"):
        one.engine  # noqa: B018
    one.delivery_overrides["send_timeout"] = 1.0
    assert two.delivery_overrides == {}  # every app has its own state


async def test_the_lifespan_fills_the_state_of_its_own_app(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    idle = relay_state(create_app(settings))
    async with running_relay(settings) as relay:
        state = relay.state
        assert state.sessions is not None and state.engine is not None
        assert state.notifier is state.hub  # the delivery layer installed its hub
        assert state.attachments.store is not None and state.push is not None
    with pytest.raises(NotStarted):
        idle.sessions  # noqa: B018

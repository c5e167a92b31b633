"""When a message is ``sent``: :meth:`Outbox.send <clients.sdk.messaging.Outbox.send>` returns
at the relay's ``accepted`` and the ``sent`` is written after (with the next send's commit, or
:data:`~clients.sdk.messaging.SENT_DELAY` later). Whatever reads states — the SDK's history,
search, queued and operations, the daemon's JSON-RPC, the CLI through the daemon — sees ``sent``
at once; closing writes it (real relay, real SQLite, a real ``vox``). A sender killed in
between: ``test_outbox_crash.py``.

The timer is made long here (``SENT_DELAY``), so only the flush before a read (or at close)
can have written the ``sent`` a reader sees."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clients.daemon import serving, socket_path
from clients.sdk import DeliveryState, VoxClient, messaging
from tests.clients.conftest import Factory
from tests.clients.kit import vox
from tests.server.relay_harness import Relay

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def long_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """An accepted send's ``sent`` is not written by the timer within the test."""
    monkeypatch.setattr(messaging, "SENT_DELAY", 3600.0)


@pytest.mark.usefixtures("long_timer")
async def test_every_sdk_reader_sees_sent_as_soon_as_send_returned(make_client: Factory) -> None:
    alice, _ = await make_client("alice"), await make_client("bob")
    first = await alice.send_text("bob", "first words")
    assert [(m.id, m.state) for m in alice.history("bob")] == [(first.id, DeliveryState.SENT)]
    second = await alice.send_text("bob", "second words")
    assert [(m.id, m.state) for m in alice.search("second")] == [(second.id, DeliveryState.SENT)]
    await alice.send_text("bob", "third")
    assert alice.queued() == []
    await alice.react("bob", first.id, "👍")
    assert alice.operations() == []
    await alice.send_text("bob", "fourth")
    assert alice.outbox.pending() == []


@pytest.mark.usefixtures("long_timer")
async def test_the_daemon_and_the_cli_see_sent_as_soon_as_send_returned(
    make_client: Factory, tmp_path: Path
) -> None:
    alice, _ = await make_client("alice"), await make_client("bob")
    home = tmp_path / "alice"
    async with serving(alice, home):
        reader, writer = await asyncio.open_unix_connection(str(socket_path(home)))

        async def call(method: str, params: dict[str, object]) -> object:
            request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            return json.loads(await asyncio.wait_for(reader.readline(), 60))["result"]

        try:
            sent = await call("send", {"to": "bob", "text": "over json-rpc"})
            assert isinstance(sent, dict)
            history = await call("history", {"conversation": "bob"})
            assert isinstance(history, list)
            assert [(m["id"], m["state"]) for m in history] == [(sent["id"], "sent")]
            await call("send", {"to": "bob", "text": "again"})
            status = await call("status", {})
            assert isinstance(status, dict) and status["queued"] == []
        finally:
            writer.close()
        # The CLI asks the daemon (which holds the profile).
        code, out, err = await vox(home, "send", "bob", "from the cli")
        assert code == 0, err
        code, out, err = await vox(home, "history", "bob")
        assert code == 0, err
        assert out.splitlines()[-1].endswith("from the cli"), out  # not "(queued)"
        await vox(home, "send", "bob", "and once more")
        code, out, err = await vox(home, "status")
        assert code == 0 and "queued: 0" in out, out + err


@pytest.mark.usefixtures("long_timer")
async def test_closing_writes_the_sent_of_the_accepted_sends(relay: Relay, tmp_path: Path) -> None:
    alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
    await bob.close()
    result = await alice.send_text("bob", "then closed")
    await alice.close()
    again = await VoxClient.open(tmp_path / "alice")  # not connected: the store as it was left
    try:
        stored = again.store.get_message(result.id)
        assert stored is not None and stored.state is DeliveryState.SENT
        assert again.store.outbox_pending() == []
    finally:
        await again.close()

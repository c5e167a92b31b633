"""A sender killed after the relay accepted a message but before its ``sent`` was written: the
message is still ``pending`` in the outbox, goes out again under the same id on restart, and
the relay answers the first ``accepted`` again (``docs/protocol-ws.md`` §3.1.1): the receiver
gets it once (a real relay, real SQLite, a SIGKILLed sender process)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from clients.sdk import DeliveryState, Event, MessageSent, VoxClient
from clients.sdk.content import new_message_id
from tests.clients.kit import queued, receive_texts, texts, wait_for
from tests.server.relay_harness import Relay

#: Opens the profile, sends and closes; SIGKILLs itself when the accepted send's ``sent`` is
#: about to be written (:meth:`Outbox.flush_sent <clients.sdk.messaging.Outbox.flush_sent>`).
_KILLED_SENDER = """
import asyncio, os, signal, sys
from clients.sdk import VoxClient
from clients.sdk.messaging import Outbox

def killed(self: Outbox) -> None:
    if self._sent_batch:
        os.kill(os.getpid(), signal.SIGKILL)

async def main() -> None:
    Outbox.flush_sent = killed
    client = await VoxClient.open(sys.argv[1])
    await client.send_text("bob", "exactly once", message_id=sys.argv[2])
    await client.close()  # writes a ``sent`` not written yet

asyncio.run(main())
"""


async def test_a_sender_killed_between_accepted_and_sent_sends_again_and_it_arrives_once(
    relay: Relay, tmp_path: Path
) -> None:
    home = tmp_path / "alice"
    alice = await VoxClient.register(home, relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
    await bob.close()
    await alice.send_text("bob", "set-up")
    await alice.close()
    mid = new_message_id().hex()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_SENDER, str(home), mid,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert await queued(relay, "bob") == 2  # the relay has it ...
    alice = await VoxClient.open(home)
    try:
        stored = alice.store.get_message(mid)  # ... and the store still says pending
        assert stored is not None and stored.state is DeliveryState.PENDING
        assert [e.message_id for e in alice.store.outbox_pending()] == [mid]
        events: list[Event] = []
        alice.on_event(events.append)
        await alice.connect(receive=False)  # the outbox sends it again, same id
        await wait_for(lambda: any(isinstance(e, MessageSent) for e in events), 60)
        assert [e.message_id for e in events if isinstance(e, MessageSent)] == [mid]
        assert [(m.id, m.state) for m in alice.history("bob")][-1] == (mid, DeliveryState.SENT)
        assert alice.store.outbox_pending() == []
        assert await queued(relay, "bob") == 2  # answered with the first accepted, not stored
    finally:
        await alice.close()
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        received = await receive_texts(bob, "alice", 2)
        assert texts(received, "alice") == ["set-up", "exactly once"]
        assert texts(await bob.receive(wait=0.5), "alice") == []
    finally:
        await bob.close()

"""The per-socket delivery limits are operator settings (``[limits]`` /
``VOX_LIMITS__<NAME>``): ``max_inflight``, ``max_pending_sends`` (both served in ``ready``),
``outbound_pause_bytes``, ``max_outbound_bytes`` and ``send_timeout_seconds`` (the slow-consumer
test in test_limits_ws.py runs with ``send_timeout_seconds = 1``)."""

from __future__ import annotations

from pathlib import Path

from server.settings import load_settings
from tests.server.ws_kit import open_ws, payload, world


def test_the_socket_limits_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "VOX_LIMITS__MAX_INFLIGHT": "7",
            "VOX_LIMITS__MAX_PENDING_SENDS": "9",
            "VOX_LIMITS__OUTBOUND_PAUSE_BYTES": "65536",
            "VOX_LIMITS__MAX_OUTBOUND_BYTES": "2097152",
            "VOX_LIMITS__SEND_TIMEOUT_SECONDS": "3.5",
        }
    )
    limits = settings.limits
    assert (limits.max_inflight, limits.max_pending_sends) == (7, 9)
    assert (limits.outbound_pause_bytes, limits.max_outbound_bytes) == (65536, 2097152)
    assert limits.send_timeout_seconds == 3.5


async def test_max_inflight_holds_deliveries_until_acks_and_is_served(tmp_path: Path) -> None:
    limits = {"max_inflight": 3, "max_pending_sends": 5}
    async with world(tmp_path, {"alice": [1], "bob": [1]}, limits=limits) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(5):
                await a.send_message(f"m{i}", [(payload(), [bob])])
            for _ in range(5):
                await a.expect("accepted")
        async with open_ws(w.relay, bob) as b:
            assert b.ready["limits"]["max_inflight"] == 3
            assert b.ready["limits"]["max_pending_sends"] == 5
            first = [await b.expect("deliver") for _ in range(3)]
            await b.nothing()  # three unacked: the rest wait
            await b.send({"type": "ack", "seqs": [first[0]["seq"]]})
            fourth = await b.expect("deliver")
            await b.nothing()
            assert fourth["seq"] not in {f["seq"] for f in first}

"""The relay runs on one injected clock: moving it forward (no sleeping) expires tokens and
queued envelopes and refills rate-limit windows through a real relay."""

from __future__ import annotations

from pathlib import Path

from server.clock import ShiftedClock
from tests.server.relay_harness import TestAccount, auth_header
from tests.server.ws_kit import Peer, open_ws, payload, world

HOUR = 3600


async def test_a_token_expires_when_the_relay_clock_passes_its_lifetime(tmp_path: Path) -> None:
    clock = ShiftedClock()
    async with world(
        tmp_path, {"alice": [1]}, clock=clock, limits={"token_ttl_seconds": HOUR}
    ) as w:
        alice = w["alice", 1]
        async with w.relay.client() as http:
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(alice.token))
            ).is_success
            clock.advance(HOUR - 5)
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(alice.token))
            ).is_success
            clock.advance(5)
            expired = await http.get("/v1/prekeys/count", headers=auth_header(alice.token))
        assert (expired.status_code, expired.json()["error"]) == (401, "token_expired")
        async with open_ws(w.relay, None) as ws:
            await ws.send({"type": "auth", "token": alice.token})
            assert await ws.closed() == (4401, "token_expired")


async def test_queued_envelopes_expire_when_the_relay_clock_passes_their_ttl(
    tmp_path: Path,
) -> None:
    clock = ShiftedClock()
    ttl = 2 * HOUR
    async with world(
        tmp_path,
        {"alice": [1], "bob": [1]},
        clock=clock,
        limits={"envelope_ttl_seconds": ttl, "token_ttl_seconds": 90 * 86400},
    ) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("late", [(payload(), [bob])])
            await a.expect("accepted")
        clock.advance(ttl)
        # Past its expiry the envelope is never delivered, and the sweeper (which reads the
        # same clock) deletes it.
        async with open_ws(w.relay, bob) as b:
            await b.nothing()
        assert await w.relay.state.delivery.sweep() == 1
        assert await w.counts() == (0, 0, 0)


async def test_a_rate_limit_window_refills_when_the_relay_clock_moves(tmp_path: Path) -> None:
    clock = ShiftedClock()
    async with world(
        tmp_path, {"alice": [1]}, clock=clock, limits={"challenges_per_minute_per_address": 2}
    ) as w:
        body = {"username": "alice", "device_id": 1}
        async with w.relay.client() as http:
            # The login in world() took the first of this minute's two challenges.
            assert (await http.post("/v1/auth/challenge", json=body)).status_code == 200
            assert (await http.post("/v1/auth/challenge", json=body)).status_code == 429
            clock.advance(30)  # one token back (2 per minute)
            assert (await http.post("/v1/auth/challenge", json=body)).status_code == 200
            assert (await http.post("/v1/auth/challenge", json=body)).status_code == 429


async def test_a_socket_outlives_its_token_by_no_relogin_of_the_same_device(tmp_path: Path) -> None:
    # A device's socket authenticated with a token that expires; the device then logs in again
    # over REST (which deletes its expired tokens and stores the new one). The token re-check
    # must close the old socket as expired: on SQLite the new token took the deleted row's id
    # (rowid reuse), so the re-check found "its" token alive and the socket lived on.
    clock = ShiftedClock()
    async with world(
        tmp_path, {}, clock=clock, limits={"token_ttl_seconds": HOUR}, token_check_interval=3600
    ) as w:
        alice = TestAccount.new("alice")
        async with w.relay.client() as http:
            token = await alice.register_and_login(http)
            async with open_ws(w.relay, Peer("alice", 1, token)) as ws:
                clock.advance(HOUR)
                await alice.login(http)
                assert await w.relay.state.delivery.check_tokens() == 1
                assert await ws.closed() == (4401, "token_expired")

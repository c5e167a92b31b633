"""Bad input on /v1/ws: each answered with an error frame or a close code with a reason; nothing
stored changes and another connection carries on undisturbed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.server.ws_kit import Peer, World, WsClient, open_ws, payload, world

SPEC = {"alice": [1], "bob": [1], "carol": [1], "dave": [1]}


async def _bystanders_unaffected(w: World) -> None:
    """carol → dave still works end to end after the bad input."""
    dave, carol = w["dave", 1], w["carol", 1]
    async with open_ws(w.relay, carol) as c, open_ws(w.relay, dave) as b:
        await c.send_message("after", [(b"still fine", [dave])])
        await c.expect("accepted")
        d = await b.expect("deliver")
        await b.send({"type": "ack", "seqs": [d["seq"]]})
        await b.send({"type": "ping"})
        await b.expect("pong")


def _send(frame_id: Any, payloads: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "send", "id": frame_id, "payloads": payloads, **extra}


def _to(peer: Peer) -> list[dict[str, Any]]:
    return [{"user": peer.user, "device": peer.device}]


ERROR_CASES: dict[str, tuple[Callable[[Peer], Any], str]] = {
    "wrong type for device": (
        lambda bob: _send("x1", [{"data": "AA==", "to": [{"user": "bob", "device": "1"}]}]),
        "bad_frame",
    ),
    "wrong type for payloads": (lambda bob: _send("x2", "AA=="), "bad_frame"),
    "missing id": (lambda bob: {"type": "send", "payloads": []}, "bad_frame"),
    "extra field": (
        lambda bob: _send("x3", [{"data": "AA==", "to": _to(bob)}], evil=1),
        "bad_frame",
    ),
    "unknown frame type": (lambda bob: {"type": "launch", "id": "x4"}, "unknown_type"),
    "no type": (lambda bob: {"id": "x5"}, "bad_frame"),
    "invalid base64": (
        lambda bob: _send("x6", [{"data": "not base64!", "to": _to(bob)}]),
        "bad_base64",
    ),
    "base64 without padding": (
        lambda bob: _send("x7", [{"data": "AAA", "to": _to(bob)}]),
        "bad_base64",
    ),
    "unknown recipient": (
        lambda bob: _send("x8", [{"data": "AA==", "to": [{"user": "nobody", "device": 1}]}]),
        "unknown_user",
    ),
    "duplicate recipient": (
        lambda bob: _send("x9", [{"data": "AA==", "to": _to(bob) + _to(bob)}]),
        "duplicate_recipient",
    ),
    "ack of ids that are not yours": (
        lambda bob: {"type": "ack", "seqs": [1, 2, 3]},
        "ack_unknown",
    ),
    "ack with a string seq": (lambda bob: {"type": "ack", "seqs": ["1"]}, "bad_frame"),
    "second auth frame": (lambda bob: {"type": "auth", "token": "x"}, "bad_frame"),
}


async def test_recoverable_bad_frames_get_an_error_and_the_connection_stays(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, SPEC) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        # Something queued for bob, to check that bad acks do not touch it.
        async with open_ws(w.relay, alice) as a:
            await a.send_message("queued", [(payload(), [bob])])
            await a.expect("accepted")
            before = await w.counts()
            for case, (build, code) in ERROR_CASES.items():
                await a.send(build(bob))
                error = await a.expect("error")
                assert error["code"] == code, (case, error)
                assert error["message"], case
                assert await w.counts() == before, case
                await a.send({"type": "ping", "id": "still-open"})
                assert (await a.expect("pong"))["id"] == "still-open", case
        await _bystanders_unaffected(w)
        async with open_ws(w.relay, bob) as b:  # bob's queue is intact
            await b.expect("deliver")


def _sending(frame: dict[str, Any] | str) -> Callable[[WsClient], Awaitable[None]]:
    """An action for :func:`_raw` that sends ``frame``."""
    return lambda ws: ws.send(frame)


async def _raw(
    w: World, peer: Peer | None, action: Callable[[WsClient], Awaitable[None]]
) -> tuple[int | None, str | None]:
    async with open_ws(w.relay, peer, max_size=None) as ws:
        await action(ws)
        return await ws.closed()


async def test_malformed_json_closes_with_4400(tmp_path: Path) -> None:
    async with world(tmp_path, SPEC) as w:
        before = await w.counts()
        code, reason = await _raw(w, w["alice", 1], lambda ws: ws.send('{"type": "send", '))
        assert code == 4400 and reason == "frame is not valid JSON"
        code, reason = await _raw(w, w["alice", 1], lambda ws: ws.send("[1, 2]"))
        assert code == 4400 and reason == "frame must be a JSON object"
        assert await w.counts() == before
        await _bystanders_unaffected(w)


async def test_binary_frames_close_with_4400(tmp_path: Path) -> None:
    async with world(tmp_path, SPEC) as w:
        code, reason = await _raw(w, w["alice", 1], lambda ws: ws.ws.send(b"\x00\x01"))
        assert code == 4400 and "binary" in (reason or "")
        await _bystanders_unaffected(w)


async def test_oversized_frames_close_with_1009_and_oversized_payloads_are_refused(
    tmp_path: Path,
) -> None:
    limits = {"max_frame_bytes": 64 * 1024, "max_ciphertext_bytes": 8 * 1024}
    async with world(tmp_path, SPEC, limits=limits) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            # Within the frame limit but over the ciphertext limit: an error, nothing stored.
            await a.send_message("big", [(payload(8 * 1024 + 1), [bob])])
            error = await a.expect("error")
            assert error["code"] == "too_large" and error["id"] == "big"
        huge = json.dumps(_send("huge", [{"data": "A" * (80 * 1024), "to": _to(bob)}]))
        code, _ = await _raw(w, alice, lambda ws: ws.send(huge))
        assert code == 1009
        assert await w.counts() == (0, 0, 0)
        await _bystanders_unaffected(w)


async def test_anything_but_a_valid_auth_first_closes_with_4401(tmp_path: Path) -> None:
    firsts: list[Any] = [
        {"type": "send", "id": "early", "payloads": [{"data": "AA==", "to": []}]},
        {"type": "auth", "token": "A" * 43},
        {"type": "auth", "token": 12},
        {"type": "auth"},
        "not json",
    ]
    async with world(tmp_path, SPEC) as w:
        for first in firsts:
            code, reason = await _raw(w, None, _sending(first))
            assert code == 4401 and reason, first
        assert await w.counts() == (0, 0, 0)
        await _bystanders_unaffected(w)

"""The lane fence (``after``, ``docs/protocol-ws.md`` §3.1.4): a send naming a predecessor is
stored only if that predecessor is — committed earlier or accepted earlier in the same batch —
else refused with ``predecessor_missing``; on SQLite and PostgreSQL, through a real relay."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from server.db.models_delivery import DeliverySend
from server.delivery.policy import PREDECESSOR_MISSING, LaneFence
from server.delivery.repository import BatchReads
from tests.server.ws_kit import Peer, World, WsClient, open_ws, payload, world
from wire.codes import ErrorCode

# --- the policy, pure ---------------------------------------------------------------------


def test_the_policy_refuses_an_absent_predecessor_and_passes_a_stored_one() -> None:
    fence = LaneFence([(7, "stored")])
    assert fence.refusal(7, None) is None  # no constraint
    assert fence.refusal(7, "stored") is None
    assert fence.refusal(7, "absent") == PREDECESSOR_MISSING == ErrorCode.PREDECESSOR_MISSING
    assert fence.refusal(8, "stored") == PREDECESSOR_MISSING  # another device's send


def test_the_policy_passes_a_predecessor_accepted_earlier_in_the_batch_only() -> None:
    fence = LaneFence([])
    assert fence.refusal(7, "first") == PREDECESSOR_MISSING  # not (yet) accepted: refused
    fence.stored(7, "first")
    assert fence.refusal(7, "first") is None
    assert fence.refusal(9, "first") == PREDECESSOR_MISSING


# --- through a real relay --------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def alice_and_bob(
    tmp_path: Path, database_url: str | None, **overrides: Any
) -> AsyncIterator[tuple[World, WsClient, WsClient]]:
    """A relay (a 200 ms batching window unless told otherwise, so that frames written
    back to back share a batch) and alice/1, bob/1 connected."""
    overrides.setdefault("commit_max_wait", 0.2)
    async with (
        world(
            tmp_path,
            {"alice": [1], "bob": [1]},
            database_url=database_url,
            limits={"messages_per_second_per_device": 100_000.0},
            **overrides,
        ) as w,
        open_ws(w.relay, w["alice", 1]) as a,
        open_ws(w.relay, w["bob", 1]) as b,
    ):
        yield w, a, b


def send(client_id: str, to: list[Peer], data: bytes, after: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "send",
        "id": client_id,
        "payloads": [{"data": base64.b64encode(data).decode(), "to": [p.ref for p in to]}],
    }
    if after is not None:
        frame["after"] = after
    return frame


async def answers(ws: WsClient, n: int) -> dict[str, dict[str, Any]]:
    """The next ``n`` answers, by client id."""
    got = [await ws.recv() for _ in range(n)]
    return {str(f["id"]): f for f in got}


async def test_an_absent_predecessor_refuses_the_send_and_stores_nothing(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alice_and_bob(tmp_path, database_url, commit_max_wait=0.002) as (w, a, b):
        bob = w["bob", 1]
        await a.send(send("m2", [bob], payload(), after="m1"))
        refused = await a.expect("error")
        assert (refused["id"], refused["code"]) == ("m2", "predecessor_missing")
        assert await w.counts() == (0, 0, 0)
        # Sent, then the successor again (same id): both stored, in order.
        await a.send(send("m1", [bob], b"first"))
        assert (await a.expect("accepted"))["id"] == "m1"
        await a.send(send("m2", [bob], b"second", after="m1"))
        assert (await a.expect("accepted"))["id"] == "m2"
        got = [base64.b64decode((await b.expect("deliver"))["data"]) for _ in range(2)]
        assert got == [b"first", b"second"]
        # A repeat of a stored send is answered as such, whatever it names.
        await a.send(send("m2", [bob], b"second", after="never-sent"))
        assert (await a.expect("accepted"))["id"] == "m2"
        assert await w.count(DeliverySend) == 2


async def test_a_predecessor_earlier_in_the_same_batch_lets_the_lane_through(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alice_and_bob(tmp_path, database_url) as (w, a, b):
        bob = w["bob", 1]
        repo = w.relay.state.delivery.writers[0]._repo
        lookups: list[list[tuple[int, str]]] = []
        batch_reads = repo.batch_reads

        def counted(
            conn: Connection,
            acks: Sequence[tuple[int, int]],
            keys: Sequence[tuple[int, str]],
            users: Iterable[str],
            removed: list[tuple[int, int, int]] | None = None,
            recipients: Iterable[tuple[str, int]] = (),
        ) -> BatchReads:
            if keys:
                lookups.append(list(keys))
            return batch_reads(conn, acks, keys, users, removed=removed, recipients=recipients)

        repo.batch_reads = counted  # type: ignore[method-assign]
        for i in range(5):
            after = f"m{i - 1}" if i else None
            await a.send(send(f"m{i}", [bob], f"n{i}".encode(), after=after))
        got = await answers(a, 5)
        assert {f["type"] for f in got.values()} == {"accepted"}
        assert len({f["ts"] for f in got.values()}) == 1, "not one batch"
        # One lookup for the batch: de-duplication and predecessors (here the same keys).
        assert [sorted(cid for _, cid in keys) for keys in lookups] == [[f"m{i}" for i in range(5)]]
        delivered = [base64.b64decode((await b.expect("deliver"))["data"]) for _ in range(5)]
        assert delivered == [f"n{i}".encode() for i in range(5)]


async def test_a_predecessor_refused_in_the_same_batch_refuses_its_successors(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alice_and_bob(tmp_path, database_url) as (w, a, _):
        bob, stale = w["bob", 1], Peer("bob", 9, "")
        await a.send(send("m1", [bob, stale], payload()))  # mismatch: refused
        await a.send(send("m2", [bob], payload(), after="m1"))
        await a.send(send("m3", [bob], payload(), after="m2"))
        await a.send(send("other", [bob], payload()))  # another lane: unaffected
        got = await answers(a, 4)
        assert len({f.get("ts") for f in got.values() if f["type"] == "accepted"}) == 1
        assert got["m1"]["type"] == "mismatch"
        assert (got["m2"]["type"], got["m2"]["code"]) == ("error", "predecessor_missing")
        assert (got["m3"]["type"], got["m3"]["code"]) == ("error", "predecessor_missing")
        assert got["other"]["type"] == "accepted"
        assert await w.count(DeliverySend) == 1


async def test_a_predecessor_later_in_the_batch_does_not_count(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alice_and_bob(tmp_path, database_url) as (w, a, _):
        bob = w["bob", 1]
        await a.send(send("m2", [bob], payload(), after="m1"))
        await a.send(send("m1", [bob], payload()))
        got = await answers(a, 2)
        assert got["m2"]["code"] == "predecessor_missing" and got["m1"]["type"] == "accepted"


async def test_after_is_refused_on_an_ephemeral_send_and_on_the_send_itself(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alice_and_bob(tmp_path, database_url, commit_max_wait=0.002) as (w, a, _):
        bob = w["bob", 1]
        await a.send({**send("e1", [bob], payload(), after="m0"), "ephemeral": True})
        frame = await a.expect("error")
        assert frame["code"] == "bad_frame" and "ephemeral" in frame["message"]
        await a.send(send("m1", [bob], payload(), after="m1"))
        frame = await a.expect("error")
        assert frame["code"] == "bad_frame" and "itself" in frame["message"]
        await a.send(send("m2", [bob], payload(), after="bad id!"))
        assert (await a.expect("error"))["code"] == "bad_frame"
        assert await w.counts() == (0, 0, 0)


#: One writer keeping four one-send batches in flight: a lane's sends land in different,
#: concurrently committing batches.
PIPELINED: dict[str, Any] = {
    "commit_writers": 1,
    "commit_pipeline": 4,
    "commit_max_batch": 1,
    "commit_max_wait": 0.0,
}


@pytest.mark.postgres
async def test_a_predecessor_still_committing_in_an_earlier_batch_is_waited_for(
    tmp_path: Path, postgres_url: str
) -> None:
    """PostgreSQL keeps several batches in flight: a successor in a later batch cannot see its
    predecessor's uncommitted row, so it waits for the predecessor's answer (never refused
    for that, never stored before it)."""
    n = 60
    async with alice_and_bob(tmp_path, postgres_url, **PIPELINED) as (w, a, b):
        bob = w["bob", 1]
        for i in range(n):
            after = f"m{i - 1}" if i else None
            await a.send(send(f"m{i}", [bob], f"n{i}".encode(), after=after))
        got = await answers(a, n)
        refused = {k: f for k, f in got.items() if f["type"] != "accepted"}
        assert refused == {}
        delivered = [base64.b64decode((await b.expect("deliver"))["data"]) for _ in range(n)]
        assert delivered == [f"n{i}".encode() for i in range(n)]
        assert await w.count(DeliverySend) == n


@pytest.mark.postgres
async def test_a_repeat_of_a_send_waiting_for_its_predecessor_gets_its_answer(
    tmp_path: Path, postgres_url: str
) -> None:
    """A send held for its predecessor (pipelined batches) and repeated meanwhile: both copies
    are answered with the same ``accepted``, and it is stored once."""
    n = 20
    async with alice_and_bob(tmp_path, postgres_url, **PIPELINED) as (w, a, _):
        bob = w["bob", 1]
        frames = [
            send(f"m{i}", [bob], f"n{i}".encode(), after=f"m{i - 1}" if i else None)
            for i in range(n)
        ]
        for frame in frames:
            await a.send(frame)
        await a.send(frames[n - 1])  # the last one again, while it (probably) still waits
        got = [await a.recv() for _ in range(n + 1)]
        assert [f for f in got if f["type"] != "accepted"] == []
        last = [f for f in got if f["id"] == f"m{n - 1}"]
        assert len(last) == 2 and last[0]["envelope"] == last[1]["envelope"]
        assert await w.count(DeliverySend) == n

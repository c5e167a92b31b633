"""The SQLite writer's device-set and queue-usage cache (``server.delivery.sqlite_cache``):
used between batches, and forgotten whenever another connection or process committed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.delivery import writer as writer_module
from server.delivery.policy import resolve_recipients
from server.delivery.sqlite_cache import WriterCache
from tests.server.test_cli import run_cli
from tests.server.ws_kit import World, open_ws, payload, world


def _cache(w: World) -> WriterCache:
    cache = w.relay.state.delivery.writers[0].cache
    assert cache is not None
    return cache


async def test_an_account_deleted_by_another_process_is_unknown_at_once(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1], "carol": [1]}) as w:
        alice, bob, carol = w["alice", 1], w["bob", 1], w["carol", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(3):  # the writer now knows bob's and carol's devices
                await a.send_message(f"m{i}", [(payload(), [bob, carol])])
                await a.expect("accepted")
            assert _cache(w).hits > 0
            data_dir = str(w.relay.settings.data_dir)
            code, _out, err = await run_cli("account", "delete", "bob", "--data-dir", data_dir)
            assert code == 0, err
            await a.send_message("after", [(payload(), [bob, carol])])
            error = await a.expect("error")
            assert error["code"] == "unknown_user" and error["users"] == ["bob"]
            await a.send_message("carol-only", [(payload(), [carol])])
            assert (await a.expect("accepted"))["id"] == "carol-only"


async def test_queue_rows_deleted_by_another_connection_free_the_queue(tmp_path: Path) -> None:
    limits = {"max_queue_depth": 10, "queue_share_per_sender": 1.0}
    async with world(tmp_path, {"alice": [1], "bob": [1]}, limits=limits) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(10):
                await a.send_message(f"m{i}", [(payload(), [bob])])
                assert (await a.expect("accepted"))["id"] == f"m{i}"
            await a.send_message("full", [(payload(), [bob])])
            assert (await a.expect("error"))["code"] == "queue_full"
            # Any other writer of the file (here: a plain connection, as an operator's tool).
            database = w.relay.settings.data_dir / "relay.sqlite3"
            with sqlite3.connect(database) as other:
                other.execute(
                    "DELETE FROM delivery_queue WHERE seq IN (SELECT min(seq) FROM delivery_queue)"
                )
            await a.send_message("room", [(payload(), [bob])])
            await a.send_message("full-again", [(payload(), [bob])])
            assert (await a.expect("accepted"))["id"] == "room"
            assert (await a.expect("error"))["code"] == "queue_full"


async def test_acked_rows_are_taken_off_the_cached_usage(tmp_path: Path) -> None:
    limits = {"max_queue_depth": 10, "queue_share_per_sender": 1.0}
    async with world(tmp_path, {"alice": [1], "bob": [1]}, limits=limits) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            for round_ in range(4):  # 40 sends through a queue of 10, acked as they come
                for i in range(10):
                    await a.send_message(f"r{round_}-{i}", [(payload(), [bob])])
                for i in range(10):
                    assert (await a.expect("accepted"))["id"] == f"r{round_}-{i}"
                frames = [await b.expect("deliver") for _ in range(10)]
                await b.send({"type": "ack", "seqs": [f["seq"] for f in frames]})
                await w.relay.state.delivery.drained()
            await a.send_message("x1", [(payload(), [bob])])
            assert (await a.expect("accepted"))["id"] == "x1"
        assert _cache(w).hits > 0


async def test_an_addressing_is_resolved_once_until_another_connection_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[Any] = []
    resolve = resolve_recipients

    def counting(*args: Any, **kwargs: Any) -> Any:
        resolved.append(args[0])
        return resolve(*args, **kwargs)

    monkeypatch.setattr(writer_module, "resolve_recipients", counting)
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(5):  # a batch each: every send waits for the previous answer
                await a.send_message(f"m{i}", [(payload(), [bob])])
                assert (await a.expect("accepted"))["id"] == f"m{i}"
            assert len(resolved) == 1
            # bob gets a second device, written by another connection: the next send that
            # addresses only his first one is a mismatch at once.
            database = w.relay.settings.data_dir / "relay.sqlite3"
            with sqlite3.connect(database) as other:
                other.execute(
                    "INSERT INTO devices (account_id, device_id, identity_key, auth_key,"
                    " created_at) SELECT account_id, 2, identity_key, auth_key, created_at"
                    " FROM devices WHERE account_id = (SELECT id FROM accounts"
                    " WHERE username = 'bob')"
                )
            await a.send_message("stale", [(payload(), [bob])])
            mismatch = await a.expect("mismatch")
            assert mismatch["missing"] == [{"user": "bob", "device": 2}]
            assert len(resolved) == 2

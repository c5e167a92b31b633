"""The delivery tables have no foreign keys (migration 0008): what the keys cascaded is
deleted explicitly, in the same transaction as the devices.

A foreign key on these tables cost PostgreSQL a trigger and a row lock per inserted row, four
per message; ``delivery_queue`` has three indexes, not five.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.accounts import repository as accounts
from server.db.engine import create_engine, sqlite_sync_engine
from server.db.migrate import upgrade
from server.delivery.repository import DeliveryRepository, NewSend, Stored
from tests.server.ws_kit import Seeded, seed_alice_and_bob, seeded_database

DELIVERY_TABLES = ("delivery_sends", "delivery_payloads", "delivery_queue")


def _schema(conn: Connection) -> tuple[dict[str, list[str]], set[str]]:
    inspector = inspect(conn)
    fks = {t: [str(fk["name"]) for fk in inspector.get_foreign_keys(t)] for t in DELIVERY_TABLES}
    indexes = {str(ix["name"]) for ix in inspector.get_indexes("delivery_queue")}
    return fks, indexes


async def _check_schema(url: str) -> None:
    async with seeded_database(url) as (engine, _), engine.connect() as conn:
        fks, indexes = await conn.run_sync(_schema)
    assert fks == {table: [] for table in DELIVERY_TABLES}
    # With the primary key (seq): three indexes per queue row.
    assert indexes == {"ix_delivery_queue_device", "ix_delivery_queue_payload"}


async def test_no_foreign_keys_and_two_secondary_queue_indexes_on_sqlite(tmp_path: Path) -> None:
    await _check_schema(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.mark.postgres
async def test_no_foreign_keys_and_two_secondary_queue_indexes_on_postgresql(
    postgres_url: str,
) -> None:
    await _check_schema(postgres_url)


async def _insert(engine: AsyncEngine, sends: list[NewSend]) -> Stored:
    """The writer's insert (on SQLite through a synchronous connection, as the writer's)."""
    repo = DeliveryRepository()
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            return await conn.run_sync(lambda c: repo.insert_sends(c, sends))
    sync = sqlite_sync_engine(engine)
    try:
        with sync.begin() as c:
            return repo.insert_sends(c, sends)
    finally:
        sync.dispose()


def _send(envelope_id: str, sender: int, user: str, account: int, to: list[int]) -> NewSend:
    return NewSend(
        envelope_id=envelope_id,
        sender_device_pk=sender,
        sender_account_id=account,
        sender_user=user,
        sender_device_id=1,
        client_id=f"c-{envelope_id}",
        ts=1,
        expires_at=2**40,
        payloads=[(envelope_id.encode(), to)],
    )


async def _rows(engine: AsyncEngine) -> dict[str, set[tuple[object, ...]]]:
    async with engine.connect() as conn:
        return {
            "sends": {
                tuple(r)
                for r in await conn.execute(
                    text("SELECT envelope_id, sender_device_pk FROM delivery_sends")
                )
            },
            "payloads": {
                tuple(r)
                for r in await conn.execute(text("SELECT envelope_id FROM delivery_payloads"))
            },
            "queue": {
                tuple(r)
                for r in await conn.execute(
                    text("SELECT device_pk, envelope_id FROM delivery_queue")
                )
            },
        }


async def _device_deletion(url: str) -> None:
    async with seeded_database(url) as (engine, seeded):
        alice, bob, account = seeded.sender, seeded.recipient, seeded.account
        async with engine.connect() as conn:
            bob_account = (
                await conn.execute(text("SELECT id FROM accounts WHERE username = 'bob'"))
            ).scalar_one()
        await _insert(
            engine,
            [
                _send("a2b", alice, "alice", account, [bob]),  # only bob: orphaned
                _send("a2ab", alice, "alice", account, [alice, bob]),  # alice keeps it
                _send("b2a", bob, "bob", bob_account, [alice]),  # bob's send: goes
            ],
        )
        async with AsyncSession(engine) as session:
            await accounts.delete_devices(session, [bob])
            await session.commit()
        rows = await _rows(engine)
        assert rows == {
            "sends": {("a2b", alice), ("a2ab", alice)},
            "payloads": {("a2ab",)},
            "queue": {(alice, "a2ab")},
        }
        async with engine.connect() as conn:
            devices = (await conn.execute(text("SELECT count(*) FROM devices"))).scalar_one()
        assert devices == 1


async def test_deleting_a_device_deletes_its_queue_its_sends_and_orphaned_payloads_on_sqlite(
    tmp_path: Path,
) -> None:
    await _device_deletion(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.mark.postgres
async def test_deleting_a_device_deletes_its_queue_its_sends_and_orphaned_payloads_on_postgresql(
    postgres_url: str,
) -> None:
    await _device_deletion(postgres_url)


@pytest.mark.postgres
async def test_a_send_to_a_device_deleted_meanwhile_queues_nothing_for_it(
    postgres_url: str,
) -> None:
    """The race a foreign key used to refuse: the batch resolved the device before it was
    deleted; its insert queues nothing for it (the other recipients get theirs)."""
    async with seeded_database(postgres_url) as (engine, seeded):
        gone = seeded.recipient + 1000
        send = _send("e1", seeded.sender, "alice", seeded.account, [seeded.recipient, gone])
        stored = await _insert(engine, [send])
        assert set(stored.per_device) == {seeded.recipient}
        assert (await _rows(engine))["queue"] == {(seeded.recipient, "e1")}


async def test_upgrading_to_0008_keeps_rows_and_the_queue_counter_on_sqlite(
    tmp_path: Path,
) -> None:
    """SQLite rebuilds the tables; a seq handed out before must never come again."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        await upgrade(engine, "0007")
        async with engine.begin() as conn:
            alice, bob, account = await conn.run_sync(seed_alice_and_bob)
        seeded = Seeded(alice, bob, account)
        first = await _insert(engine, [seeded.send("e1", "c1"), seeded.send("e2", "c2")])
        seqs = [d.seq for d in first.per_device[bob]]
        sync = sqlite_sync_engine(engine)
        try:
            with sync.begin() as c:
                assert DeliveryRepository().delete_acked(c, [(bob, seqs[1])]) == 1
        finally:
            sync.dispose()
        await upgrade(engine)
        rows = await _rows(engine)
        assert rows["queue"] == {(bob, "e1")} and rows["sends"] == {("e1", alice), ("e2", alice)}
        later = await _insert(engine, [seeded.send("e3", "c3")])
        assert [d.seq for d in later.per_device[bob]] == [seqs[1] + 1]
    finally:
        await engine.dispose()

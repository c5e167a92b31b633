"""The relay's hot statements use indexes, on SQLite and on PostgreSQL.

Every statement of the delivery path (de-duplication lookup, which also finds the lane
predecessors named in ``after``; device sets, queue usage and the queue locks, the inserts,
the queue fetch for delivery, the ack deletes, the expiry sweep) and of the one-time-prekey
claim and of a login (challenge and token), and every statement over ``attachments``,
``attachment_usage`` and ``attachment_uploads`` of an attachment's life (create an upload — it
checks the quotas: the device's stored bytes, the relay's running total, the reservations of
unfinished uploads, ``attachment_id IS NULL`` —, append, finish, delete it:
``attachment_id = ?``) is run once
through the real code on a migrated database, recorded as it reaches the driver, and explained:

- SQLite: ``EXPLAIN QUERY PLAN`` must not ``SCAN`` a table (a full pass, with or without a
  covering index) — only searches, the statement's own ``VALUES``/CTE rows and
  ``sqlite_sequence`` (one row per table) may be scanned.
- PostgreSQL: ``EXPLAIN`` with ``enable_seqscan = off`` must not show a ``Seq Scan`` (the
  planner then picks a sequential scan only when no index can answer the statement).

The tables are near-empty, so this checks the *shape* of each plan, not its speed: a statement
that can only be answered by reading a whole table (the row-value ``IN (VALUES ...)`` dedupe
lookup did, growing with every send of the last 30 days) fails here at any size.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import server.delivery.repository as repository
from server.attachments import AttachmentService, LocalDiskStore
from server.auth import repository as auth_repo
from server.clock import Clock
from server.db import raw
from server.db.engine import create_engine, sqlite_sync_engine
from server.db.migrate import upgrade
from server.delivery.repository import DeliveryRepository, NewSend
from server.prekeys import repository as prekeys
from tests.server.ws_kit import seed_alice_and_bob

NOW = 1_700_000_000_000
TABLES = {
    "accounts",
    "devices",
    "delivery_sends",
    "delivery_payloads",
    "delivery_queue",
    "one_time_prekeys",
    "prekey_claims",
    "auth_challenges",
    "auth_tokens",
    "attachment_uploads",
    "attachments",
    "attachment_usage",
}

Statement = tuple[str, Any]


class _RecordingCursor:
    """A driver cursor that records what it is asked to run (the repository's raw paths)."""

    def __init__(self, cursor: Any, seen: list[Statement]) -> None:
        self._cursor = cursor
        self._seen = seen

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._seen.append((sql, params))
        return self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        if rows:
            self._seen.append((sql, rows[0]))
        return self._cursor.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextmanager
def _recording(sync_engines: list[Any], seen: list[Statement]) -> Iterator[None]:
    def before(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if many:
            parameters = parameters[0] if parameters else ()
        seen.append((statement, parameters))

    for engine in sync_engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        for engine in sync_engines:
            event.remove(engine, "before_cursor_execute", before)


def _hot(statement: str) -> bool:
    head = statement.lstrip().split(None, 1)[0].upper()
    return head in {"SELECT", "INSERT", "DELETE", "UPDATE", "WITH"}


def _delivery_path(conn: Connection, sender_pk: int, recipient_pk: int, sender_acct: int) -> None:
    """Every delivery statement once, with more than one row where a batch can have several."""
    repo = DeliveryRepository()
    # Own keys and predecessors (``after``) alike: one statement per batch.
    repo.find_sends(conn, [(sender_pk, "c1"), (sender_pk, "c2"), (recipient_pk, "c3")])
    sets = repo.device_sets(conn, ["alice", "bob", "nobody"])
    assert sets.devices["bob"] == {1: recipient_pk}
    repo.lock_queues(conn, [recipient_pk, sender_pk])
    repo.queue_usage(conn, [recipient_pk, sender_pk])
    # What the writer runs (PostgreSQL: one statement each; the queue count runs inside a
    # function, explained on its own below).
    reads = repo.batch_reads(
        conn,
        [(recipient_pk, 1), (recipient_pk, 2)],
        [(sender_pk, "c1")],
        ["alice", "bob"],
        recipients=[("bob", 1), ("alice", 2)],
    )
    assert reads.sets.devices["bob"] == {1: recipient_pk}
    if reads.held is not None:  # PostgreSQL: the recipients' queues locked and counted
        assert set(reads.held) == {recipient_pk}
    repo.lock_queue_usage(conn, [recipient_pk, sender_pk])
    sends = [
        NewSend(
            envelope_id=f"env{i}",
            sender_device_pk=sender_pk,
            sender_account_id=sender_acct,
            sender_user="alice",
            sender_device_id=1,
            client_id=f"c{i}",
            ts=NOW,
            expires_at=NOW + 86_400_000,
            payloads=[(b"ciphertext", [recipient_pk])],
        )
        for i in (1, 2)
    ]
    per_device = repo.insert_sends(conn, sends).per_device
    seqs = [d.seq for d in per_device[recipient_pk]]
    assert len(repo.fetch_queue(conn, recipient_pk, 100, NOW)) == 2
    assert repo.delete_acked(conn, [(recipient_pk, seq) for seq in seqs]) == 2
    repo.sweep(conn, NOW)


def _login_path(conn: Connection, device_pk: int) -> None:
    """Every statement of a challenge and a token (``server.auth.service``)."""
    assert auth_repo.login_device(conn, "bob", 1) is not None
    auth_repo.delete_expired_for_device(conn, device_pk, NOW)
    auth_repo.challenge_counts(conn, device_pk)
    auth_repo.add_challenge(conn, nonce_hash=b"n" * 32, device_pk=device_pk, expires_at=NOW + 1)
    auth_repo.delete_oldest_challenges(conn, device_pk, "", 1)
    auth_repo.add_challenge(conn, nonce_hash=b"m" * 32, device_pk=device_pk, expires_at=NOW + 1)
    assert auth_repo.take_challenge(conn, b"m" * 32) == (device_pk, NOW + 1)
    auth_repo.add_token(
        conn, token_hash=b"t" * 32, device_pk=device_pk, now=NOW, expires_at=NOW + 1
    )


async def _prekey_claim(engine: AsyncEngine, recipient_pk: int, sender_pk: int) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await prekeys.lock_claims(session, recipient_pk)
        await prekeys.recent_claims(session, recipient_pk, sender_pk, NOW - 3_600_000)
        assert await prekeys.claim_one_time(session, recipient_pk, 1) is not None
        await prekeys.record_claim(session, recipient_pk, sender_pk, NOW)


async def _attachment_path(engine: AsyncEngine, device_pk: int, store: Path) -> None:
    """An attachment's life through :class:`AttachmentService`: upload, finish, delete."""
    service = AttachmentService(
        engine, LocalDiskStore(store), max_bytes=1 << 20, ttl_seconds=3600, clock=Clock(),
        quota_per_device=1 << 30, quota_total=1 << 40,
    )  # fmt: skip

    async def body() -> AsyncIterator[bytes]:
        yield b"blob"

    upload = await service.create_upload(device_pk, 4)
    await service.append(device_pk, upload.id, 0, 4, body())
    info, _ = await service.finish(device_pk, upload.id)
    assert await service.delete(device_pk, info.id)


def _over_attachments(seen: list[Statement]) -> list[Statement]:
    """The attachment path's statements over ``attachments``, ``attachment_usage`` (the
    relay-wide quota: it summed all of ``attachments`` before migration 0010) and
    ``attachment_uploads``."""
    tables = re.compile(r"\battachment(s|_usage|_uploads)\b")
    mine = [(sql, params) for sql, params in seen if _hot(sql) and tables.search(sql)]
    texts = " ".join(sql for sql, _ in mine)
    assert "IS NULL" in texts and "DELETE FROM attachment_uploads" in texts
    assert "INSERT INTO attachments" in texts
    return mine


def _sqlite_full_scans(plan: list[tuple[Any, ...]], statement: str) -> list[str]:
    aliases = {
        alias.lower()
        for table, alias in re.findall(r"\b(\w+)\s+AS\s+(\w+)", statement, flags=re.IGNORECASE)
        if table.lower() in TABLES
    }
    bad = []
    for row in plan:
        detail = str(row[-1])
        match = re.match(r"SCAN (\w+)", detail)
        if match and match.group(1).lower() in TABLES | aliases:
            bad.append(detail)
    return bad


async def test_sqlite_hot_statements_search_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plans.sqlite3'}")
    await upgrade(engine)
    sync = sqlite_sync_engine(engine)
    seen: list[Statement] = []
    # The statements sent straight to the driver (delivery writer, logins): one cursor factory.
    cursor = raw.sqlite_cursor
    monkeypatch.setattr(raw, "sqlite_cursor", lambda conn: _RecordingCursor(cursor(conn), seen))
    try:
        with sync.begin() as conn:
            sender_pk, recipient_pk, sender_acct = seed_alice_and_bob(conn)
        with _recording([sync, engine.sync_engine], seen):
            with sync.begin() as conn:
                _delivery_path(conn, sender_pk, recipient_pk, sender_acct)
            with sync.begin() as conn:
                _login_path(conn, recipient_pk)
            await _prekey_claim(engine, recipient_pk, sender_pk)
            await _attachment_path(engine, recipient_pk, tmp_path / "attachments")
        hot = [(sql, params) for sql, params in seen if _hot(sql)]
        _over_attachments(seen)
        failures = []
        with sync.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            for sql, params in hot:
                plan = cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
                if bad := _sqlite_full_scans(plan, sql):
                    failures.append(f"{sql}\n  -> {bad}")
            cursor.close()
        assert not failures, "full table scans:\n" + "\n".join(failures)
        texts = " ".join(sql for sql, _ in hot)
        for needle in sorted(TABLES - {"accounts", "devices", "delivery_payloads"}):
            assert needle in texts
    finally:
        sync.dispose()
        await engine.dispose()


def test_sqlite_plan_check_catches_the_row_value_dedupe_scan(tmp_path: Path) -> None:
    """The check itself: the old de-duplication lookup is reported as a full scan."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.sqlite3")
    db.execute(
        "CREATE TABLE delivery_sends (envelope_id TEXT PRIMARY KEY, sender_device_pk INTEGER,"
        " client_id TEXT, created_at INTEGER, UNIQUE (sender_device_pk, client_id))"
    )
    old = (
        "SELECT sender_device_pk, client_id, envelope_id, created_at FROM delivery_sends "
        "WHERE (sender_device_pk, client_id) IN (VALUES (?,?),(?,?))"
    )
    plan = db.execute(f"EXPLAIN QUERY PLAN {old}", (1, "a", 2, "b")).fetchall()
    assert _sqlite_full_scans(plan, old)
    new = repository._find_sends_sqlite(2)
    plan = db.execute(f"EXPLAIN QUERY PLAN {new}", (1, "a", 2, "b")).fetchall()
    assert not _sqlite_full_scans(plan, new)
    db.close()


@pytest.mark.postgres
async def test_postgres_hot_statements_use_indexes(postgres_url: str, tmp_path: Path) -> None:
    engine = create_engine(postgres_url)
    await upgrade(engine)
    seen: list[Statement] = []
    try:
        async with engine.begin() as conn:
            sender_pk, recipient_pk, sender_acct = await conn.run_sync(seed_alice_and_bob)
        with _recording([engine.sync_engine], seen):
            async with engine.begin() as conn:
                await conn.run_sync(_delivery_path, sender_pk, recipient_pk, sender_acct)
            async with engine.begin() as conn:
                await conn.run_sync(_login_path, recipient_pk)
            await _prekey_claim(engine, recipient_pk, sender_pk)
        attachment_path: list[Statement] = []
        with _recording([engine.sync_engine], attachment_path):
            await _attachment_path(engine, recipient_pk, tmp_path / "attachments")
        hot = [(sql, params) for sql, params in seen if _hot(sql)]
        hot += _over_attachments(attachment_path)
        failures = []
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            for sql, params in hot:
                result = await conn.exec_driver_sql(f"EXPLAIN {sql}", params)
                plan = "\n".join(str(row[0]) for row in result)
                if "Seq Scan" in plan:
                    failures.append(f"{sql}\n{plan}")
            # The statements inside the writer's session functions (the batch reads with the
            # recipients' queue locks, and the lock-and-count: their counts are this one).
            inside = [
                (
                    repository.QUEUE_USAGE_PG,
                    ([recipient_pk, sender_pk],),
                    "delivery_queue_usage",
                ),
                (
                    repository.BATCH_READS_IN_FUNCTION_PG,
                    ([recipient_pk], [1, 2], [sender_pk], ["c1"], ["alice", "bob"]),
                    "delivery_sends",
                ),
                (  # its arguments 6 and 7 (the only ones it names)
                    repository.RECIPIENT_DEVICES_IN_FUNCTION_PG.replace("$6", "$1").replace(
                        "$7", "$2"
                    ),
                    (["bob", "alice"], [1, 2]),
                    "devices",
                ),
            ]
            for sql, args, table in inside:
                result = await conn.exec_driver_sql(f"EXPLAIN {sql}", args)
                plan = "\n".join(str(row[0]) for row in result)
                if "Seq Scan" in plan or table not in plan:
                    failures.append(f"{sql}\n{plan}")
            await conn.rollback()
        assert not failures, "sequential scans:\n" + "\n\n".join(failures)
        texts = " ".join(sql for sql, _ in hot)
        for needle in sorted(TABLES - {"accounts", "devices", "delivery_payloads"}):
            assert needle in texts
    finally:
        await engine.dispose()


DEEP = 600

# Rows of ``delivery_queue`` read in this transaction: by sequential scans (the table's
# tuples returned), and index entries returned by its indexes (index-only scans included).
_QUEUE_READS = """
SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(c.oid)), 0) FROM pg_class AS c
WHERE c.oid = 'delivery_queue'::regclass
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'delivery_queue'::regclass)
"""


@pytest.mark.postgres
async def test_postgres_queue_limits_do_not_read_a_deep_queue(postgres_url: str) -> None:
    """The queue limits' reads of a recipient with ``DEEP`` queued envelopes touch a few of
    ``delivery_queue``'s rows and index entries, not the queue: the writer's batch reads
    (with acks of two of them), its lock-and-count, and the two-statement path (no session
    function). The counters they read must still be exact. (Counting the queue, before
    migration 0011, read all ``DEEP`` index entries in each of them.)"""
    from tests.server.ws_kit import seeded_database

    repo = DeliveryRepository()
    async with seeded_database(postgres_url) as (engine, seeded):
        async with engine.begin() as conn:
            stored = await conn.run_sync(
                repo.insert_sends, [seeded.send(f"e{i}", f"c{i}") for i in range(DEEP)]
            )
        seqs = [d.seq for d in stored.per_device[seeded.recipient]]
        bob = seeded.recipient

        def reads(conn: Connection) -> list[tuple[int, int]]:
            out = []
            batch = repo.batch_reads(
                conn,
                [(bob, seqs[0]), (bob, seqs[1])],
                [(seeded.sender, "new")],
                ["alice", "bob"],
                recipients=[("bob", 1)],
            )
            assert batch.acked == 2 and batch.held is not None
            out.append((batch.held[bob].depth, batch.held[bob].bytes))
            usage = repo.lock_queue_usage(conn, [bob])  # the function, without ``held``
            out.append((usage[bob].depth, usage[bob].bytes))
            repo.lock_queues(conn, [bob])  # the path without session functions
            usage = repo.queue_usage(conn, [bob])
            out.append((usage[bob].depth, usage[bob].bytes))
            assert usage[bob].by_sender == {seeded.account: (DEEP - 2, (DEEP - 2) * 10)}
            return out

        async with engine.begin() as conn:
            assert await conn.run_sync(reads) == [(DEEP - 2, (DEEP - 2) * 10)] * 3
            read = await conn.scalar(text(_QUEUE_READS))
            await conn.rollback()
        # The acks' delete reads its own two rows (a plan may look at a few more).
        assert read < 20, f"{read} rows of delivery_queue read for {DEEP} queued"

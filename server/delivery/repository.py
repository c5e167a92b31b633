"""SQL for delivery (SQLAlchemy Core on a *synchronous* ``Connection``; the caller owns the
transaction).

Every statement works for a whole batch at once: the group-commit writer
(:mod:`server.delivery.writer`) calls these with the sends and acks of many connections and
commits once. They are synchronous so that a whole transaction can run in one go — in a
dedicated thread on SQLite (one hand-off per batch instead of several per statement), or
through ``Connection.run_sync`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Table,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from server.db import raw
from server.db.models import Account, Device
from server.db.models_delivery import DeliveryPayload, DeliverySend, QueueEntry
from server.delivery.frames import Delivery, deliver_tail
from server.delivery.policy import QueueUsage
from wire.encoding import b64

__all__ = [
    "QUEUE_LOCK_CLASS",
    "DeliveryRepository",
    "DeviceSets",
    "NewSend",
    "SendRecord",
    "Stored",
    "queue_lock_key",
]

_sends = cast(Table, DeliverySend.__table__)
_payloads = cast(Table, DeliveryPayload.__table__)
_queue = cast(Table, QueueEntry.__table__)
_devices = cast(Table, Device.__table__)
_accounts = cast(Table, Account.__table__)

# Parameter lists are chunked below SQLite's historical 999-variable limit.
_CHUNK = 400
_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    """``?,?,...``: ``n`` placeholders (never values)."""
    return ",".join("?" * n)


def _device_sets_sqlite(n: int) -> str:
    return (
        "SELECT a.username, a.id, d.device_id, d.pk FROM accounts AS a "  # noqa: S608
        f"LEFT OUTER JOIN devices AS d ON d.account_id = a.id WHERE a.username IN ({_marks(n)})"
    )


def _queue_usage_sqlite(n: int) -> str:
    return (
        "SELECT device_pk, sender_account_id, count(*), coalesce(sum(size), 0) "  # noqa: S608
        f"FROM delivery_queue WHERE device_pk IN ({_marks(n)}) "
        "GROUP BY device_pk, sender_account_id"
    )


def _in(conn: Connection, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (:name...)`` with a statement text that does not depend on the list length
    on PostgreSQL (``= ANY(:name)``), so asyncpg's prepared-statement cache keeps hitting."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


# One search of the unique index per key, whatever the planner knows about the table: a
# cached plan (a prepared statement, a statement in a session function) is made once, often
# while ``delivery_sends`` is still small or has no statistics, and a plain join against the
# keys was then planned as a hash join over a sequential scan of the whole table — kept while
# the table grew to every send of the last 30 days. The ``LIMIT`` keeps the subquery a
# subquery (a per-key index probe), and the key is unique: it never drops a row.
_FIND_SENDS_SQL = (
    "SELECT k.pk AS sender_device_pk, k.cid AS client_id, s.envelope_id, s.created_at "
    "FROM unnest(CAST(:pks AS BIGINT[]), CAST(:ids AS VARCHAR[])) AS k(pk, cid) "
    "CROSS JOIN LATERAL (SELECT s.envelope_id, s.created_at FROM delivery_sends AS s "
    "WHERE s.sender_device_pk = k.pk AND s.client_id = k.cid LIMIT 1) AS s"
)
_FIND_SENDS_PG = raw.pg_statement(_FIND_SENDS_SQL)


def _device_sets_pg(names: str) -> str:
    """The devices (NULL: none) and account ids of the users named by the array parameter
    ``names``: one probe of the username index per name, then that account's range of
    ``uq_devices_account_id_device_id`` (subqueries, as :data:`_FIND_SENDS_SQL`)."""
    return (
        " SELECT a.username, a.id, d.device_id, d.pk"  # noqa: S608 (a placeholder name)
        f" FROM unnest(CAST({names} AS VARCHAR[])) AS n(u)"
        " CROSS JOIN LATERAL (SELECT a.username, a.id FROM accounts AS a"
        " WHERE a.username = n.u LIMIT 1) AS a"
        " LEFT OUTER JOIN LATERAL (SELECT d.device_id, d.pk FROM devices AS d"
        " WHERE d.account_id = a.id OFFSET 0) AS d ON true"
    )


def _find_sends_sqlite(n: int) -> str:
    """The SQLite dedupe lookup for ``n`` (sender device pk, client id) pairs."""
    marks = ",".join("(?,?)" for _ in range(n))  # placeholders only, never values
    return (
        f"WITH k(pk, cid) AS (VALUES {marks}) "  # noqa: S608
        "SELECT s.sender_device_pk, s.client_id, s.envelope_id, s.created_at "
        "FROM k CROSS JOIN delivery_sends AS s "
        "ON s.sender_device_pk = k.pk AND s.client_id = k.cid"
    )


# No foreign keys (migration 0008): a queue row is inserted only while its device exists. A
# device deletion takes the device's queue lock (which this batch holds by now) before it
# deletes: deleted before this statement began, the device gets no row (as if it had been
# deleted just after the commit); deleted after, its deletion sees and removes this batch's
# rows. A send whose (sender, client id) another transaction stored meanwhile (another node:
# this node's writers never have the same send in flight twice) is skipped with its payloads
# and queue rows, not an error: the statement answers which sends it stored. (An error would
# roll back the whole batch, and redoing its sends one by one could let a later batch of the
# same connection commit first.) The payloads and queue rows of such sends are left out by
# ``<> ALL(skipped)``, the envelope ids not stored (an array computed once, almost always
# empty): a semi join against ``new_sends`` was planned, in the generic plan the prepared
# statement settles on, as a nested loop that scans the CTE once per queue row (quadratic
# in the batch: 1,500 comparisons at 55 sends, 15,000 at 170).
_INSERT_PG = raw.pg_statement(
    "WITH new_sends AS ("
    " INSERT INTO delivery_sends (envelope_id, sender_device_pk, sender_user,"
    " sender_device_id, client_id, created_at, expires_at)"
    " SELECT * FROM unnest(CAST(:s0 AS VARCHAR[]), CAST(:s1 AS BIGINT[]),"
    " CAST(:s2 AS VARCHAR[]), CAST(:s3 AS BIGINT[]), CAST(:s4 AS VARCHAR[]),"
    " CAST(:s5 AS BIGINT[]), CAST(:s6 AS BIGINT[]))"
    " ON CONFLICT (sender_device_pk, client_id) DO NOTHING"
    " RETURNING envelope_id"
    "), skipped AS ("
    " SELECT ARRAY(SELECT e FROM unnest(CAST(:s0 AS VARCHAR[])) AS e"
    " EXCEPT ALL SELECT envelope_id FROM new_sends) AS ids"
    "), new_payloads AS ("
    " INSERT INTO delivery_payloads (envelope_id, idx, data)"
    " SELECT p.* FROM unnest(CAST(:p0 AS VARCHAR[]), CAST(:p1 AS SMALLINT[]),"
    " CAST(:p2 AS BYTEA[])) AS p(e, i, d)"
    " WHERE p.e <> ALL(CAST((SELECT ids FROM skipped) AS VARCHAR[]))"
    "), new_queue AS ("
    " INSERT INTO delivery_queue (device_pk, envelope_id, idx, expires_at, size,"
    " sender_account_id)"
    " SELECT q.d, q.e, q.i, q.x, q.s, q.a FROM unnest(CAST(:q0 AS BIGINT[]),"
    " CAST(:q1 AS VARCHAR[]), CAST(:q2 AS SMALLINT[]), CAST(:q3 AS BIGINT[]),"
    " CAST(:q4 AS INTEGER[]), CAST(:q5 AS BIGINT[])) WITH ORDINALITY AS q(d, e, i, x, s, a, n)"
    " WHERE q.e <> ALL(CAST((SELECT ids FROM skipped) AS VARCHAR[]))"
    # (a scalar subquery: one probe of devices' primary key per row, never a join that a
    # cached plan may turn into a scan of every device)
    " AND (SELECT true FROM devices WHERE devices.pk = q.d)"
    " ORDER BY q.n"  # seqs in the batch's order, whatever join the planner picks
    " RETURNING seq, device_pk, envelope_id, idx"
    ") "
    "SELECT seq, device_pk, envelope_id, idx FROM new_queue"
    " UNION ALL SELECT NULL, NULL, envelope_id, NULL FROM new_sends"
)


# The acks' queue rows, then the payloads no other queue row references. The NOT EXISTS sees
# the statement's snapshot (rows being deleted still there): it ignores the rows this
# statement deletes.
_ACKED_CTES = (
    "WITH gone AS ("
    " DELETE FROM delivery_queue"
    " WHERE device_pk = ANY(CAST(:devices AS BIGINT[])) AND seq = ANY(CAST(:seqs AS BIGINT[]))"
    " RETURNING device_pk, seq, envelope_id, idx"
    "), orphans AS ("
    " DELETE FROM delivery_payloads AS p USING (SELECT DISTINCT envelope_id, idx FROM gone) AS g"
    " WHERE p.envelope_id = g.envelope_id AND p.idx = g.idx AND NOT EXISTS ("
    "  SELECT 1 FROM delivery_queue AS q WHERE q.envelope_id = p.envelope_id"
    "  AND q.idx = p.idx AND q.seq NOT IN (SELECT seq FROM gone))"
    ")"
)
_DELETE_ACKED_PG = raw.pg_statement(f"{_ACKED_CTES} SELECT device_pk, seq FROM gone")  # noqa: S608


# The batch's reads in one round trip (PostgreSQL): its acks deleted, the sends already
# stored among the (sender device pk, client id) pairs named (de-duplication and lane
# predecessors), and the device sets of the users named. Rows are tagged by kind: 0 = (device
# pk, seq) acked; 1 = (sender device pk, created at, -, client id, envelope id) found; 2 =
# (account id, device id, device pk, username) of a device set (no device: NULL pk).
_BATCH_READS_PG = raw.pg_statement(
    f"{_ACKED_CTES}, found AS ({_FIND_SENDS_SQL}), sets AS ("  # noqa: S608 (constants)
    f"{_device_sets_pg(':names')}"
    ") "
    "SELECT 0, device_pk, seq, CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR),"
    " CAST(NULL AS VARCHAR) FROM gone"
    " UNION ALL SELECT 1, sender_device_pk, created_at, NULL, client_id, envelope_id FROM found"
    " UNION ALL SELECT 2, id, device_id, pk, username, NULL FROM sets"
)


#: Class id of the transaction-level advisory locks that serialise writers per recipient
#: queue (``pg_advisory_xact_lock(int4, int4)``): "VoxQ".
QUEUE_LOCK_CLASS = 0x566F7851

# Takes the locks in array order (the caller passes the keys sorted, so two writers never
# wait for each other in a cycle); held until the transaction ends.
_LOCK_QUEUES_PG = raw.pg_statement(
    "SELECT count(pg_advisory_xact_lock(:cls, k)) FROM unnest(CAST(:keys AS INTEGER[])) AS t(k)"
)


def _queue_usage_pg(pks: str, kind: str = "") -> str:
    """What the queues of the devices in the array ``pks`` hold, per device and sending
    account: rows (device pk, sending account, count, bytes), each prefixed with ``kind`` and
    followed by two NULL names if ``kind`` is given (:data:`BATCH_READS_FUNCTION_PG`).

    Read from the counters (``delivery_queue_usage``, migration 0011: one index range per
    device, however deep its queue), after folding in the removals the ``DELETE`` trigger of
    ``delivery_queue`` appended since (``delivery_queue_removed``; counters that reach 0 are
    deleted, and a removal with no counter — only an ``UPDATE`` moving rows to another device
    or sender makes one — becomes one). The caller holds the devices' queue locks: nothing
    else changes their counters meanwhile, and a removal committed after this statement began
    stays for the next fold — counted as still queued, as a row deleted by a transaction not
    yet committed always was.
    The statement's own snapshot does not show its updates, so the folded counters come from
    the ``UPDATE``'s ``RETURNING`` and the others from the table."""
    head = f"{kind}, " if kind else ""
    tail = ", CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR)" if kind else ""
    return (
        "WITH gone AS ("  # noqa: S608 (constants and a parameter's name)
        " DELETE FROM delivery_queue_removed AS r"
        f" WHERE r.device_pk = ANY(CAST({pks} AS BIGINT[]))"
        " RETURNING r.device_pk, r.sender_account_id, r.count, r.bytes"
        "), taken AS ("
        " SELECT g.device_pk, g.sender_account_id, CAST(sum(g.count) AS BIGINT) AS n,"
        " CAST(sum(g.bytes) AS BIGINT) AS b FROM gone AS g"
        " GROUP BY g.device_pk, g.sender_account_id"
        "), emptied AS ("
        " DELETE FROM delivery_queue_usage AS u USING taken AS k"
        " WHERE u.device_pk = k.device_pk AND u.sender_account_id = k.sender_account_id"
        " AND u.count = k.n"
        "), folded AS ("
        " UPDATE delivery_queue_usage AS u SET count = u.count - k.n, bytes = u.bytes - k.b"
        " FROM taken AS k WHERE u.device_pk = k.device_pk"
        " AND u.sender_account_id = k.sender_account_id AND u.count <> k.n"
        " RETURNING u.device_pk, u.sender_account_id, u.count, u.bytes"
        "), added AS ("  # removals with no counter: only an UPDATE moving rows makes them
        " INSERT INTO delivery_queue_usage (device_pk, sender_account_id, count, bytes)"
        " SELECT k.device_pk, k.sender_account_id, -k.n, -k.b FROM taken AS k"
        " WHERE (k.n <> 0 OR k.b <> 0) AND NOT EXISTS (SELECT 1 FROM delivery_queue_usage AS u"
        " WHERE u.device_pk = k.device_pk AND u.sender_account_id = k.sender_account_id)"
        " RETURNING device_pk, sender_account_id, count, bytes"
        ") "
        f"SELECT {head}f.device_pk, f.sender_account_id, f.count, f.bytes{tail} FROM folded AS f"
        f" UNION ALL SELECT {head}a.device_pk, a.sender_account_id, a.count, a.bytes{tail}"
        " FROM added AS a"
        f" UNION ALL SELECT {head}t.p, u.sender_account_id, u.count, u.bytes{tail}"
        f" FROM (SELECT DISTINCT x.p FROM unnest(CAST({pks} AS BIGINT[])) AS x(p)) AS t(p)"
        " CROSS JOIN LATERAL (SELECT u.sender_account_id, u.count, u.bytes"
        " FROM delivery_queue_usage AS u WHERE u.device_pk = t.p OFFSET 0) AS u"
        " WHERE NOT EXISTS (SELECT 1 FROM taken AS k WHERE k.device_pk = t.p"
        " AND k.sender_account_id = u.sender_account_id)"
    )


#: What a queue holds, per device and sending account (PostgreSQL; ``$1``: device pks, whose
#: queue locks the caller holds): :func:`_queue_usage_pg`.
QUEUE_USAGE_PG = _queue_usage_pg("$1")

_QUEUE_USAGE_PG = raw.PgStatement(QUEUE_USAGE_PG, ("pks",))

# Around the statements of the session functions (PL/pgSQL variables ``s_*``): index probes
# and nested loops only. A function's statement is planned once per connection, often while
# the tables are small or have no statistics, and the plan is kept: the acks' delete
# (``device_pk = ANY(...) AND seq = ANY(...)``) was planned as a bitmap scan of the device's
# whole range of ``ix_delivery_queue_device`` with ``seq`` as a filter — every queued row of
# an acking device read per batch — and a sequential scan or a hash join planned against the
# counters (one row per device and sender) or the removals would read all of them. No
# bitmap scans at all: rows deleted as fast as they are inserted (queue rows, removals) leave
# their index entries until VACUUM; a plain index scan marks the entries of rows dead to
# everyone as such and later scans skip them, a bitmap scan never does. ``set_config(...,
# true)``: for the transaction only, restored right after (a plan is made with the settings
# in force then).
_PLANNER = ("bitmapscan", "seqscan", "hashjoin", "mergejoin")
_INDEX_PROBES_DECLARE = "".join(f" s_{name} TEXT;" for name in _PLANNER)
_INDEX_PROBES_ON = "".join(
    f" s_{name} := current_setting('enable_{name}');"
    f" PERFORM set_config('enable_{name}', 'off', true);"
    for name in _PLANNER
)
_INDEX_PROBES_OFF = "".join(
    f" PERFORM set_config('enable_{name}', s_{name}, true);" for name in _PLANNER
)

#: Locks the queues, then reads their counters (:func:`_queue_usage_pg`), in one round trip.
#: A statement sees the snapshot taken when it began — before a lock it waits for inside it
#: is granted — so the read cannot share the locking statement; a VOLATILE function takes a
#: fresh snapshot for each statement in it (READ COMMITTED), so its read, taken once the
#: locks are held, sees everything the batches that held them before committed.
#: ``pg_temp``: created on each connection (:func:`server.db.engine.create_engine`), nothing
#: in the schema.
QUEUE_USAGE_FUNCTION_PG = (
    "CREATE OR REPLACE FUNCTION pg_temp.vox_lock_queue_usage("
    "pks BIGINT[], keys INTEGER[], cls INTEGER)"
    " RETURNS TABLE (o_device BIGINT, o_sender BIGINT, o_count BIGINT, o_bytes BIGINT)"
    " LANGUAGE plpgsql VOLATILE AS $fn$"
    f" DECLARE{_INDEX_PROBES_DECLARE}"
    " BEGIN"
    " PERFORM count(pg_advisory_xact_lock(cls, k)) FROM unnest(keys) AS t(k);"
    f"{_INDEX_PROBES_ON}"
    f" RETURN QUERY {_queue_usage_pg('pks')};"
    f"{_INDEX_PROBES_OFF}"
    " END $fn$"
)

#: Inside :data:`BATCH_READS_FUNCTION_PG` (``$1``-``$7``: its arguments): the batch reads.
BATCH_READS_IN_FUNCTION_PG = (
    "WITH gone AS ("  # noqa: S608 (constants)
    " DELETE FROM delivery_queue"
    " WHERE device_pk = ANY(CAST($1 AS BIGINT[])) AND seq = ANY(CAST($2 AS BIGINT[]))"
    " RETURNING device_pk, seq, envelope_id, idx"
    "), orphans AS ("
    " DELETE FROM delivery_payloads AS p USING (SELECT DISTINCT envelope_id, idx FROM gone) AS g"
    " WHERE p.envelope_id = g.envelope_id AND p.idx = g.idx AND NOT EXISTS ("
    "  SELECT 1 FROM delivery_queue AS q WHERE q.envelope_id = p.envelope_id"
    "  AND q.idx = p.idx AND q.seq NOT IN (SELECT seq FROM gone))"
    "), found AS ("
    " SELECT k.pk AS sender_device_pk, k.cid AS client_id, s.envelope_id, s.created_at"
    " FROM unnest(CAST($3 AS BIGINT[]), CAST($4 AS VARCHAR[])) AS k(pk, cid)"
    " CROSS JOIN LATERAL (SELECT s.envelope_id, s.created_at FROM delivery_sends AS s"
    " WHERE s.sender_device_pk = k.pk AND s.client_id = k.cid LIMIT 1) AS s"
    "), sets AS ("
    f"{_device_sets_pg('$5')}"
    ") "
    "SELECT 0, gone.device_pk, gone.seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),"
    " CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR) FROM gone"
    " UNION ALL SELECT 1, found.sender_device_pk, found.created_at, NULL, NULL,"
    " found.client_id, found.envelope_id FROM found"
    " UNION ALL SELECT 2, sets.id, sets.device_id, sets.pk, NULL, sets.username, NULL FROM sets"
)

#: Inside :data:`BATCH_READS_FUNCTION_PG`: the recipient devices named that exist.
_RECIPIENT_DEVICES_FROM = (
    " FROM unnest(CAST($6 AS VARCHAR[]), CAST($7 AS BIGINT[])) AS r(u, i)"
    " CROSS JOIN LATERAL (SELECT a.id FROM accounts AS a WHERE a.username = r.u LIMIT 1) AS a"
    " CROSS JOIN LATERAL (SELECT d.pk FROM devices AS d"
    " WHERE d.account_id = a.id AND d.device_id = r.i LIMIT 1) AS d"
)
RECIPIENT_DEVICES_IN_FUNCTION_PG = f"SELECT array_agg(DISTINCT d.pk){_RECIPIENT_DEVICES_FROM}"

#: A batch's first round trip when the connection has it (PostgreSQL): the batch reads
#: (:data:`_BATCH_READS_PG`'s rows, kinds 0-2), then the queue locks of every existing device
#: the batch's sends name as a recipient (in key order), then — read once the locks are
#: held, in a fresh snapshot (as :data:`QUEUE_USAGE_FUNCTION_PG`) — those devices (kind 3:
#: pk) and their queues' counters (kind 4: device pk, sending account, count, bytes). The
#: locks are a superset of what the batch fills (a refused or repeated send's recipients
#: too), taken in one sorted pass.
BATCH_READS_FUNCTION_PG = (
    "CREATE OR REPLACE FUNCTION pg_temp.vox_batch_reads("  # noqa: S608 (constants)
    "devices BIGINT[], seqs BIGINT[], pks BIGINT[], ids VARCHAR[], names VARCHAR[],"
    " ref_users VARCHAR[], ref_devices BIGINT[], cls INTEGER)"
    " RETURNS TABLE (o_kind INTEGER, o_a BIGINT, o_b BIGINT, o_c BIGINT, o_d BIGINT,"
    " o_name VARCHAR, o_env VARCHAR)"
    " LANGUAGE plpgsql VOLATILE AS $fn$"
    f" DECLARE keys INTEGER[]; locked BIGINT[];{_INDEX_PROBES_DECLARE}"
    " BEGIN"
    f"{_INDEX_PROBES_ON}"
    f" RETURN QUERY {BATCH_READS_IN_FUNCTION_PG};"
    f" SELECT array_agg(DISTINCT d.pk) INTO locked{_RECIPIENT_DEVICES_FROM};"
    f" IF locked IS NULL THEN{_INDEX_PROBES_OFF} RETURN; END IF;"
    " SELECT array_agg(DISTINCT CAST((t.p + 2147483648) % 4294967296 - 2147483648 AS INTEGER)"
    "  ORDER BY CAST((t.p + 2147483648) % 4294967296 - 2147483648 AS INTEGER)) INTO keys"
    "  FROM unnest(locked) AS t(p);"
    " PERFORM count(pg_advisory_xact_lock(cls, k)) FROM unnest(keys) AS t(k);"
    " RETURN QUERY SELECT 3, t.p, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),"
    " CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR)"
    " FROM unnest(locked) AS t(p);"
    f" RETURN QUERY {_queue_usage_pg('locked', '4')};"
    f"{_INDEX_PROBES_OFF}"
    " END $fn$"
)

#: Every session function, created on each new PostgreSQL connection.
SESSION_FUNCTIONS_PG = f"{QUEUE_USAGE_FUNCTION_PG}; {BATCH_READS_FUNCTION_PG}"

_BATCH_READS_CALL_PG = raw.pg_statement(
    "SELECT * FROM pg_temp.vox_batch_reads(CAST(:devices AS BIGINT[]), CAST(:seqs AS BIGINT[]),"
    " CAST(:pks AS BIGINT[]), CAST(:ids AS VARCHAR[]), CAST(:names AS VARCHAR[]),"
    " CAST(:ref_users AS VARCHAR[]), CAST(:ref_devices AS BIGINT[]), :cls)"
)

#: ``Connection.info`` key: the connection has :data:`SESSION_FUNCTIONS_PG`.
SESSION_FUNCTIONS = "vox_session_functions"

_LOCK_QUEUE_USAGE_PG = raw.pg_statement(
    "SELECT * FROM pg_temp.vox_lock_queue_usage("
    "CAST(:pks AS BIGINT[]), CAST(:keys AS INTEGER[]), :cls)"
)


#: How many devices' pending removals one sweep folds in at most (PostgreSQL): each one's queue
#: lock is held until the sweep commits.
SWEEP_FOLD_DEVICES = 500

# Devices with removals not yet folded into their counters — an ack's, when no batch has sent
# to the device since; the sweep's own; a deleted sender's — whose queue lock is free: taken
# (``pg_try_advisory_xact_lock`` never waits, so it cannot deadlock) and held until the sweep
# commits. The subquery (its ``LIMIT``) keeps the lock function to the rows it returns.
_IDLE_REMOVALS_PG = raw.pg_statement(
    "SELECT c.p FROM (SELECT DISTINCT r.device_pk AS p FROM delivery_queue_removed AS r"
    " ORDER BY r.device_pk LIMIT :n) AS c"
    " WHERE pg_try_advisory_xact_lock(:cls,"
    " CAST((c.p + 2147483648) % 4294967296 - 2147483648 AS INTEGER))"
)

# Every queued row (the queue-depth gauge) from the counters, not a count of the queue.
_QUEUE_DEPTH_TOTAL_PG = raw.pg_statement(
    "SELECT (SELECT coalesce(sum(count), 0) FROM delivery_queue_usage)"
    " - (SELECT coalesce(sum(count), 0) FROM delivery_queue_removed)"
)

#: One ``delivery_queue`` row: (device pk, envelope id, idx, expires at, size, sender account).
QueueRow = tuple[int, str, int, int, int, int]


def queue_lock_key(device_pk: int) -> int:
    """The device pk folded into PostgreSQL's signed 32-bit advisory-lock key space."""
    return (device_pk + 2**31) % 2**32 - 2**31


@dataclass(slots=True, frozen=True)
class SendRecord:
    """What a repeated send is answered with."""

    envelope_id: str
    ts: int


@dataclass(slots=True)
class DeviceSets:
    """The named users that exist: their devices and their account ids."""

    #: username → {device id: device pk}
    devices: dict[str, dict[int, int]]
    #: username → ``accounts.id``
    accounts: dict[str, int]


@dataclass(slots=True)
class NewSend:
    """A validated send ready to be stored."""

    envelope_id: str
    sender_device_pk: int
    sender_account_id: int
    sender_user: str
    sender_device_id: int
    client_id: str
    ts: int
    expires_at: int
    #: (ciphertext, recipient device pks) per payload, in frame order.
    payloads: list[tuple[bytes, list[int]]]
    #: Each payload's standard base64, if known (else encoded here).
    texts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BatchReads:
    """What :meth:`DeliveryRepository.batch_reads` found."""

    #: Queue rows the acks deleted.
    acked: int
    #: Existing sends among the (sender device pk, client id) pairs asked for.
    found: dict[tuple[int, str], SendRecord]
    sets: DeviceSets
    #: PostgreSQL with the session functions: the queues locked (until the commit) and
    #: counted in the same round trip — every existing recipient device named.
    held: dict[int, QueueUsage] | None = None


@dataclass(slots=True)
class Stored:
    """What :meth:`DeliveryRepository.insert_sends` stored."""

    #: Deliveries per recipient device pk, ascending ``seq``.
    per_device: dict[int, list[Delivery]]
    #: Sends not stored: another transaction stored the same (sender, client id) first.
    conflicts: list[NewSend]


class DeliveryRepository:
    """Batch-oriented queries over ``delivery_*``, ``devices`` and ``accounts``."""

    def batch_reads(
        self,
        conn: Connection,
        acks: Sequence[tuple[int, int]],
        keys: Sequence[tuple[int, str]],
        users: Iterable[str],
        removed: list[tuple[int, int, int]] | None = None,
        recipients: Iterable[tuple[str, int]] = (),
    ) -> BatchReads:
        """A batch's first step: delete its acked queue rows (:meth:`delete_acked`; SQLite:
        listed in ``removed``), find the sends already stored (:meth:`find_sends`), and the
        device sets of ``users`` (:meth:`device_sets`) — on PostgreSQL in one statement (one
        round trip), which with the session functions also locks and counts the queues of
        the ``recipients`` (user, device id) that exist (:attr:`BatchReads.held`)."""
        names = sorted(set(users))
        if conn.dialect.name != "postgresql":
            return BatchReads(
                self.delete_acked(conn, acks, removed) if acks else 0,
                self.find_sends(conn, keys) if keys else {},
                self.device_sets(conn, names),
            )
        wanted = set(acks)
        out = BatchReads(0, {}, DeviceSets({}, {}))
        params: dict[str, Any] = {
            "devices": sorted({pk for pk, _ in wanted}),
            "seqs": sorted({seq for _, seq in wanted}),
            "pks": [pk for pk, _ in keys],
            "ids": [cid for _, cid in keys],
            "names": names,
        }
        held: dict[int, QueueUsage] = {}
        rows: Iterable[Any]
        if conn.info.get(SESSION_FUNCTIONS):
            refs = sorted(set(recipients))
            params["ref_users"] = [user for user, _ in refs]
            params["ref_devices"] = [device for _, device in refs]
            params["cls"] = QUEUE_LOCK_CLASS
            out.held = held
            rows = raw.pg_rows(conn, _BATCH_READS_CALL_PG, params)
        else:
            rows = (
                (kind, a, b, c, None, name, env)
                for kind, a, b, c, name, env in raw.pg_rows(conn, _BATCH_READS_PG, params)
            )
        for kind, a, b, c, d, name, envelope_id in rows:
            if kind == 3:
                held[a] = QueueUsage()
            elif kind == 4:
                usage = held[a]
                usage.depth += int(c)
                usage.bytes += int(d)
                usage.by_sender[b] = (int(c), int(d))
            elif kind == 0:
                assert (a, b) in wanted
                out.acked += 1
            elif kind == 1:
                out.found[(a, name)] = SendRecord(envelope_id, b)
            else:
                devices = out.sets.devices.setdefault(name, {})
                out.sets.accounts[name] = a
                if c is not None:
                    devices[b] = c
        return out

    def find_sends(
        self, conn: Connection, keys: Sequence[tuple[int, str]]
    ) -> dict[tuple[int, str], SendRecord]:
        """Existing sends for (sender device pk, client id) pairs."""
        found: dict[tuple[int, str], SendRecord] = {}
        if conn.dialect.name == "postgresql":
            # Exact pairs in one round trip: join against the unnested key arrays.
            for pairs in _chunks(list(keys), 1000):
                rows = raw.pg_rows(
                    conn,
                    _FIND_SENDS_PG,
                    {"pks": [pk for pk, _ in pairs], "ids": [cid for _, cid in pairs]},
                )
                for pk, client_id, envelope_id, ts in rows:
                    found[(pk, client_id)] = SendRecord(envelope_id, ts)
            return found
        # SQLite: exact pairs through the driver, one statement per chunk. The keys are a
        # VALUES table joined to the sends with CROSS JOIN (SQLite keeps that join order), so
        # each key is one search of the unique index. (A row-value ``IN (VALUES ...)`` scans
        # the whole table instead — every send of the last 30 days, per batch.)
        cursor = raw.sqlite_cursor(conn)
        try:
            for pairs in _chunks(list(keys), 400):
                sql = _find_sends_sqlite(len(pairs))
                flat = [v for pair in pairs for v in pair]
                for pk, client_id, envelope_id, ts in cursor.execute(sql, flat).fetchall():
                    found[(pk, client_id)] = SendRecord(envelope_id, ts)
        finally:
            cursor.close()
        return found

    def device_sets(self, conn: Connection, usernames: Iterable[str]) -> DeviceSets:
        """The devices (id → pk) and account ids of the users that exist."""
        names = sorted(set(usernames))
        out = DeviceSets({}, {})
        sqlite = conn.dialect.name == "sqlite"
        for chunk in _chunks(names):
            rows: Iterable[Any]
            if sqlite:  # the same statement through the driver (no SQLAlchemy per batch)
                rows = raw.sqlite_rows(conn, _device_sets_sqlite(len(chunk)), chunk)
            else:
                rows = conn.execute(
                    select(
                        _accounts.c.username, _accounts.c.id, _devices.c.device_id, _devices.c.pk
                    )
                    .select_from(_accounts)
                    .outerjoin(_devices, _devices.c.account_id == _accounts.c.id)
                    .where(_in(conn, _accounts.c.username, "names")),
                    {"names": list(chunk)},
                )
            for username, account_id, device_id, pk in rows:
                devices = out.devices.setdefault(username, {})
                out.accounts[username] = account_id
                if pk is not None:
                    devices[device_id] = pk
        return out

    def lock_queues(self, conn: Connection, device_pks: Iterable[int]) -> None:
        """Hold the devices' queues until the transaction ends, so that "read the usage, then
        insert" (the queue limits) is atomic across writers and relay nodes; on PostgreSQL
        the lock's holder is also the only one that changes the device's queue counters
        (``delivery_queue_usage``).

        PostgreSQL: one transaction-level advisory lock per device, taken in key order (no
        deadlock between writers; a device deletion takes them too, the sweep only with
        ``pg_try_advisory_xact_lock``, which never waits). SQLite: nothing to do, the
        writer's transaction began with ``BEGIN IMMEDIATE`` (one writer at a time).
        """
        if conn.dialect.name != "postgresql":
            return
        keys = sorted({queue_lock_key(pk) for pk in device_pks})
        if keys:
            raw.pg_rows(conn, _LOCK_QUEUES_PG, {"cls": QUEUE_LOCK_CLASS, "keys": keys})

    def lock_queue_usage(
        self,
        conn: Connection,
        device_pks: Iterable[int],
        held: dict[int, QueueUsage] | None = None,
    ) -> dict[int, QueueUsage]:
        """:meth:`lock_queues`, then :meth:`queue_usage` — on PostgreSQL in one round trip
        (a function that counts once it holds the locks) where the connection has it. Queues
        already locked and counted in this transaction (``held``, from :meth:`batch_reads`)
        cost nothing more."""
        pks = sorted(set(device_pks))
        if held is not None:
            more = [pk for pk in pks if pk not in held]
            out = {pk: held[pk] for pk in pks if pk in held}
            if more:  # not found by the lock step: deleted meanwhile (it gets no rows)
                out.update(self.lock_queue_usage(conn, more))
            return out
        if conn.dialect.name != "postgresql" or not conn.info.get(SESSION_FUNCTIONS):
            self.lock_queues(conn, pks)
            return self.queue_usage(conn, pks)
        out = {pk: QueueUsage() for pk in pks}
        if not pks:
            return out
        rows = raw.pg_rows(
            conn,
            _LOCK_QUEUE_USAGE_PG,
            {
                "pks": pks,
                "keys": sorted({queue_lock_key(pk) for pk in pks}),
                "cls": QUEUE_LOCK_CLASS,
            },
        )
        _add_usage(out, rows)
        return out

    def queue_usage(self, conn: Connection, device_pks: Iterable[int]) -> dict[int, QueueUsage]:
        """What each device's queue holds, in total and per sending account (every device
        asked for is in the result). SQLite: one pass over ``ix_delivery_queue_device`` (it
        covers the query; the writer keeps the result, ``server.delivery.sqlite_cache``).
        PostgreSQL: the counters (:func:`_queue_usage_pg`), which also folds the pending
        removals in — call it only while holding the devices' queue locks
        (:meth:`lock_queues`)."""
        pks = sorted(set(device_pks))
        out = {pk: QueueUsage() for pk in pks}
        sqlite = conn.dialect.name == "sqlite"
        for chunk in _chunks(pks):
            rows: Iterable[Any]
            if sqlite:  # the same statement through the driver (no SQLAlchemy per batch)
                rows = raw.sqlite_rows(conn, _queue_usage_sqlite(len(chunk)), chunk)
            elif conn.dialect.name == "postgresql":
                rows = raw.pg_rows(conn, _QUEUE_USAGE_PG, {"pks": list(chunk)})
            else:
                rows = conn.execute(
                    select(
                        _queue.c.device_pk,
                        _queue.c.sender_account_id,
                        func.count(),
                        func.coalesce(func.sum(_queue.c.size), 0),
                    )
                    .where(_in(conn, _queue.c.device_pk, "pks"))
                    .group_by(_queue.c.device_pk, _queue.c.sender_account_id),
                    {"pks": list(chunk)},
                )
            _add_usage(out, rows)
        return out

    def insert_sends(self, conn: Connection, sends: Sequence[NewSend]) -> Stored:
        """Store sends, payloads (once each) and queue rows; return deliveries per device
        (and, on PostgreSQL, the sends another transaction stored first)."""
        if not sends:
            return Stored({}, [])
        send_rows = [
            (
                s.envelope_id,
                s.sender_device_pk,
                s.sender_user,
                s.sender_device_id,
                s.client_id,
                s.ts,
                s.expires_at,
            )
            for s in sends
        ]
        payload_rows = [
            (s.envelope_id, idx, data) for s in sends for idx, (data, _) in enumerate(s.payloads)
        ]
        tails: dict[tuple[str, int], str] = {}
        queue_rows: list[QueueRow] = []
        for s in sends:
            for idx, (data, device_pks) in enumerate(s.payloads):
                tails[(s.envelope_id, idx)] = deliver_tail(
                    s.envelope_id,
                    s.sender_user,
                    s.sender_device_id,
                    s.ts,
                    s.texts[idx] if s.texts else b64(data),
                )
                queue_rows.extend(
                    (pk, s.envelope_id, idx, s.expires_at, len(data), s.sender_account_id)
                    for pk in device_pks
                )
        conflicts: list[NewSend] = []
        if conn.dialect.name == "sqlite":
            inserted = self._insert_sqlite(conn, send_rows, payload_rows, queue_rows)
        elif conn.dialect.name == "postgresql":
            inserted, stored = self._insert_pg(conn, send_rows, payload_rows, queue_rows)
            conflicts = [s for s in sends if s.envelope_id not in stored]
        else:
            inserted = self._insert_core(conn, send_rows, payload_rows, queue_rows)
        per_device: dict[int, list[Delivery]] = {}
        for seq, pk, envelope_id, idx in inserted:
            per_device.setdefault(pk, []).append(Delivery(seq, tails[(envelope_id, idx)]))
        for deliveries in per_device.values():
            deliveries.sort(key=lambda d: d.seq)
        return Stored(per_device, conflicts)

    @staticmethod
    def _insert_core(
        conn: Connection,
        send_rows: list[tuple[str, int, str, int, str, int, int]],
        payload_rows: list[tuple[str, int, bytes]],
        queue_rows: list[QueueRow],
    ) -> list[tuple[int, int, str, int]]:
        send_cols = (
            "envelope_id",
            "sender_device_pk",
            "sender_user",
            "sender_device_id",
            "client_id",
            "created_at",
            "expires_at",
        )
        conn.execute(insert(_sends), [dict(zip(send_cols, r, strict=True)) for r in send_rows])
        conn.execute(
            insert(_payloads),
            [{"envelope_id": e, "idx": i, "data": d} for e, i, d in payload_rows],
        )
        # Unordered multi-row RETURNING (one statement); rows are matched back by their
        # columns, so the order the database returns them in does not matter.
        result = conn.execute(
            insert(_queue).returning(
                _queue.c.seq, _queue.c.device_pk, _queue.c.envelope_id, _queue.c.idx
            ),
            [
                {
                    "device_pk": pk,
                    "envelope_id": e,
                    "idx": i,
                    "expires_at": x,
                    "size": size,
                    "sender_account_id": sender,
                }
                for pk, e, i, x, size, sender in queue_rows
            ],
        )
        return [(seq, pk, e, i) for seq, pk, e, i in result]

    @staticmethod
    def _insert_pg(
        conn: Connection,
        send_rows: list[tuple[str, int, str, int, str, int, int]],
        payload_rows: list[tuple[str, int, bytes]],
        queue_rows: list[QueueRow],
    ) -> tuple[list[tuple[int, int, str, int]], set[str]]:
        """All three inserts in one statement (one round trip): arrays unnested into rows.
        Returns the queue rows and the envelope ids of the sends stored."""
        s_cols = list(zip(*send_rows, strict=True))
        p_cols = list(zip(*payload_rows, strict=True))
        q_cols = list(zip(*queue_rows, strict=True))
        result = raw.pg_rows(
            conn,
            _INSERT_PG,
            {
                **{f"s{i}": list(col) for i, col in enumerate(s_cols)},
                **{f"p{i}": list(col) for i, col in enumerate(p_cols)},
                **{f"q{i}": list(col) for i, col in enumerate(q_cols)},
            },
        )
        rows: list[tuple[int, int, str, int]] = []
        stored: set[str] = set()
        for seq, pk, e, i in result:
            if seq is None:
                stored.add(e)
            else:
                rows.append((seq, pk, e, i))
        return rows, stored

    @staticmethod
    def _insert_sqlite(
        conn: Connection,
        send_rows: list[tuple[str, int, str, int, str, int, int]],
        payload_rows: list[tuple[str, int, bytes]],
        queue_rows: list[QueueRow],
    ) -> list[tuple[int, int, str, int]]:
        """The same rows through the driver's ``executemany`` (C speed). The caller holds
        SQLite's write lock (``BEGIN IMMEDIATE``), so the next ``seq`` values can be taken
        from ``sqlite_sequence`` (the AUTOINCREMENT counter) and assigned here."""
        cursor = raw.sqlite_cursor(conn)
        try:
            cursor.executemany(
                "INSERT INTO delivery_sends (envelope_id, sender_device_pk, sender_user, "
                "sender_device_id, client_id, created_at, expires_at) VALUES (?,?,?,?,?,?,?)",
                send_rows,
            )
            cursor.executemany(
                "INSERT INTO delivery_payloads (envelope_id, idx, data) VALUES (?,?,?)",
                payload_rows,
            )
            row = cursor.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'delivery_queue'"
            ).fetchone()
            base = int(row[0]) if row else 0
            numbered = [(base + n, *r) for n, r in enumerate(queue_rows, start=1)]
            cursor.executemany(
                "INSERT INTO delivery_queue (seq, device_pk, envelope_id, idx, expires_at, "
                "size, sender_account_id) VALUES (?,?,?,?,?,?,?)",
                numbered,
            )
        finally:
            cursor.close()
        return [(seq, pk, e, i) for seq, pk, e, i, *_ in numbered]

    def delete_acked(
        self,
        conn: Connection,
        pairs: Sequence[tuple[int, int]],
        removed: list[tuple[int, int, int]] | None = None,
    ) -> int:
        """Delete queue rows by (device pk, seq) — a device can only delete its own rows —
        then the payloads no queue row references any more. Returns the rows deleted (on
        SQLite, also appended to ``removed`` as (device pk, size, sender account id))."""
        wanted = set(pairs)
        devices = sorted({pk for pk, _ in wanted})
        seqs = sorted({seq for _, seq in wanted})
        deleted = 0
        if conn.dialect.name == "postgresql":
            # Queue rows and orphaned payloads in one statement (one round trip).
            for pg_chunk in _chunks(seqs, 5000):
                for device_pk, seq in raw.pg_rows(
                    conn, _DELETE_ACKED_PG, {"devices": devices, "seqs": list(pg_chunk)}
                ):
                    deleted += 1
                    assert (device_pk, seq) in wanted
            return deleted
        if conn.dialect.name == "sqlite":
            return self._delete_acked_sqlite(conn, devices, seqs, wanted, removed)
        envelopes: set[str] = set()
        # seq is unique across all queues, and the device filter keeps a device to its own
        # rows; one cached statement shape (expanding IN lists) for any batch.
        for seq_chunk in _chunks(seqs):
            result = conn.execute(
                delete(_queue)
                .where(_in(conn, _queue.c.device_pk, "devices"), _in(conn, _queue.c.seq, "seqs"))
                .returning(_queue.c.device_pk, _queue.c.seq, _queue.c.envelope_id),
                {"devices": devices, "seqs": list(seq_chunk)},
            )
            for device_pk, seq, envelope_id in result:
                deleted += 1
                envelopes.add(envelope_id)
                assert (device_pk, seq) in wanted
        self._delete_orphan_payloads(conn, sorted(envelopes))
        return deleted

    @staticmethod
    def _delete_acked_sqlite(
        conn: Connection,
        devices: list[int],
        seqs: list[int],
        wanted: set[tuple[int, int]],
        removed: list[tuple[int, int, int]] | None,
    ) -> int:
        deleted = 0
        keys: set[tuple[str, int]] = set()
        cursor = raw.sqlite_cursor(conn)
        try:
            device_marks = ",".join("?" for _ in devices)
            for chunk in _chunks(seqs, 400):
                seq_marks = ",".join("?" for _ in chunk)
                for device_pk, seq, envelope_id, idx, size, sender in cursor.execute(
                    f"DELETE FROM delivery_queue WHERE seq IN ({seq_marks}) "  # noqa: S608
                    f"AND device_pk IN ({device_marks}) "
                    "RETURNING device_pk, seq, envelope_id, idx, size, sender_account_id",
                    [*chunk, *devices],
                ).fetchall():
                    assert (device_pk, seq) in wanted
                    deleted += 1
                    keys.add((envelope_id, idx))
                    if removed is not None:
                        removed.append((device_pk, size, sender))
            cursor.executemany(
                "DELETE FROM delivery_payloads WHERE envelope_id = ? AND idx = ? AND NOT EXISTS "
                "(SELECT 1 FROM delivery_queue AS q WHERE q.envelope_id = delivery_payloads"
                ".envelope_id AND q.idx = delivery_payloads.idx)",
                sorted(keys),
            )
        finally:
            cursor.close()
        return deleted

    def _delete_orphan_payloads(self, conn: Connection, envelopes: Sequence[str]) -> None:
        referenced = exists().where(
            _queue.c.envelope_id == _payloads.c.envelope_id, _queue.c.idx == _payloads.c.idx
        )
        for chunk in _chunks(envelopes):
            conn.execute(
                delete(_payloads).where(_in(conn, _payloads.c.envelope_id, "ids"), ~referenced),
                {"ids": list(chunk)},
            )

    def fetch_queue(
        self, conn: Connection, device_pk: int, limit: int, now_ms: int
    ) -> list[Delivery]:
        """The oldest ``limit`` unexpired queued envelopes of one device, in ``seq`` order."""
        rows = conn.execute(
            select(
                _queue.c.seq,
                _sends.c.envelope_id,
                _sends.c.sender_user,
                _sends.c.sender_device_id,
                _sends.c.created_at,
                _payloads.c.data,
            )
            .select_from(_queue)
            .join(
                _payloads,
                (_payloads.c.envelope_id == _queue.c.envelope_id)
                & (_payloads.c.idx == _queue.c.idx),
            )
            .join(_sends, _sends.c.envelope_id == _queue.c.envelope_id)
            .where(_queue.c.device_pk == device_pk, _queue.c.expires_at > now_ms)
            .order_by(_queue.c.seq)
            .limit(limit)
        )
        return [
            Delivery(seq, deliver_tail(envelope_id, user, device_id, ts, b64(data)))
            for seq, envelope_id, user, device_id, ts, data in rows
        ]

    def queue_depth_total(self, conn: Connection) -> int:
        """All queued envelopes (for the queue-depth gauge; PostgreSQL: from the counters)."""
        if conn.dialect.name == "postgresql":
            ((total,),) = raw.pg_rows(conn, _QUEUE_DEPTH_TOTAL_PG, {})
            return int(total)
        return int(conn.execute(select(func.count()).select_from(_queue)).scalar_one())

    def sweep(self, conn: Connection, now_ms: int) -> int:
        """Delete expired queue rows, their payloads and expired send records. A queue row
        expires with its send (the same ``expires_at``): found through the send's index."""
        expired_sends = select(_sends.c.envelope_id).where(_sends.c.expires_at <= now_ms)
        result = conn.execute(delete(_queue).where(_queue.c.envelope_id.in_(expired_sends)))
        expired = result.rowcount or 0
        conn.execute(delete(_payloads).where(_payloads.c.envelope_id.in_(expired_sends)))
        conn.execute(delete(_sends).where(_sends.c.expires_at <= now_ms))
        if conn.dialect.name == "postgresql":
            self.fold_idle_removals(conn)
        return expired

    def fold_idle_removals(self, conn: Connection, limit: int = SWEEP_FOLD_DEVICES) -> int:
        """PostgreSQL: fold the pending removals of up to ``limit`` devices whose queue lock
        is free into their counters (:func:`_queue_usage_pg`), so that what the acks and
        deletions removed does not stay in ``delivery_queue_removed`` (which device had queued
        envelopes from which account) until the device is next sent to. Returns the devices
        folded."""
        params = {"n": limit, "cls": QUEUE_LOCK_CLASS}
        idle = [int(pk) for (pk,) in raw.pg_rows(conn, _IDLE_REMOVALS_PG, params)]
        if idle:
            self.queue_usage(conn, idle)
        return len(idle)


def _add_usage(out: dict[int, QueueUsage], rows: Iterable[Any]) -> None:
    """Add (device pk, sender account, count, bytes) rows to the devices' usage."""
    for pk, sender, count, size in rows:
        usage = out[pk]
        usage.depth += int(count)
        usage.bytes += int(size)
        usage.by_sender[sender] = (int(count), int(size))

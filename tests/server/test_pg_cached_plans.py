"""PostgreSQL: the writer's hot statements keep using indexes in a *cached* plan.

A prepared statement (asyncpg prepares every statement the relay runs) and a statement in a
session function (``pg_temp.vox_batch_reads``) are planned once and that plan is kept — from
the sixth run on a generic plan, made without the parameter values and with whatever the
planner knew about the tables *then*. A writer connection opened on a new or small database
plans while ``delivery_sends`` and ``delivery_queue`` are near-empty and have no statistics,
and a plain join against an unnested key array was planned as a hash join over a sequential
scan of the whole table: the de-duplication lookup then read every send of the last 30 days
on every batch, and the queue count the whole queue, until an ANALYZE happened to replan it
(``bench/relay.py --database postgres``: 10,000 sends by the end of a run, all read per batch).

So: on a freshly migrated database (tiny tables, never analyzed) with
``plan_cache_mode = force_generic_plan`` and the planner's default settings (unlike
``test_query_plans``, which turns sequential scans off to check that an index *can* answer),
the generic plan of each statement must not scan the delivery tables, nor ``accounts`` and
``devices`` (the device sets, the recipients' queue locks, the inserts' device check).
"""

from __future__ import annotations

import re

import pytest

import server.delivery.repository as repository
from server.db.engine import create_engine
from server.db.migrate import upgrade
from tests.server.ws_kit import seed_alice_and_bob

pytestmark = pytest.mark.postgres

#: Tables that grow with traffic (sends of the last 30 days, queued envelopes) or with users.
BIG = ("delivery_sends", "delivery_queue", "delivery_payloads", "accounts", "devices")

#: The session function's arguments (its inner statements use ``$1``-``$8``).
FUNCTION_ARGS = "bigint[], bigint[], bigint[], varchar[], varchar[], varchar[], bigint[], integer"


def _statements() -> list[tuple[str, str, str]]:
    """(name, argument types or '' to let PostgreSQL infer them, statement)."""
    out = [
        ("batch reads (in the function)", FUNCTION_ARGS, repository.BATCH_READS_IN_FUNCTION_PG),
        ("queue usage (in the functions)", "bigint[]", repository.QUEUE_USAGE_PG),
        (
            "recipient devices (in the function)",
            FUNCTION_ARGS,
            repository.RECIPIENT_DEVICES_IN_FUNCTION_PG,
        ),
    ]
    for name, statement in (
        ("batch reads (without the function)", repository._BATCH_READS_PG),
        ("dedupe lookup", repository._FIND_SENDS_PG),
        ("inserts", repository._INSERT_PG),
        ("ack deletes", repository._DELETE_ACKED_PG),
    ):
        out.append((name, "", statement.sql))
    return out


async def test_generic_plans_of_the_hot_statements_do_not_scan_delivery_tables(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(seed_alice_and_bob)
        failures = []
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.execute("SET plan_cache_mode = force_generic_plan")
            for n, (name, types, sql) in enumerate(_statements()):
                params = f"({types})" if types else ""
                await raw.execute(f"PREPARE vox_plan_{n}{params} AS {sql}")
                count = int(
                    await raw.fetchval(
                        "SELECT cardinality(parameter_types) FROM pg_prepared_statements"
                        " WHERE name = $1",
                        f"vox_plan_{n}",
                    )
                )
                nulls = ", ".join(["NULL"] * count)
                rows = await raw.fetch(f"EXPLAIN EXECUTE vox_plan_{n}({nulls})")
                plan = "\n".join(str(row[0]) for row in rows)
                assert "Seq Scan" in plan or "Index" in plan, plan  # it is a plan
                scanned = [t for t in BIG if re.search(rf"Seq Scan on {t}\b", plan)]
                if scanned:
                    failures.append(f"{name}: sequential scan of {scanned}\n{plan}")
                await raw.execute(f"DEALLOCATE vox_plan_{n}")
        assert not failures, "\n\n".join(failures)
    finally:
        await engine.dispose()

"""PostgreSQL: the batch insert's cached plan is linear in the batch, not quadratic.

The insert statement (``repository._INSERT_PG``) stores a batch's sends, then only the
payloads and queue rows of the sends it stored (a send another node stored first is skipped).
Written as ``WHERE envelope IN (SELECT envelope_id FROM new_sends)``, the generic plan that
asyncpg's prepared statement settles on after five runs joined the queue rows to the CTE with
a nested loop that scans the CTE once per row: 1,500 comparisons for 55 sends, 15,000 for
170, all inside the batch's queue locks. Checked on the generic plan of a fresh database (as
``test_pg_cached_plans``), and on what the statement does with real rows.
"""

from __future__ import annotations

import os
import re

import pytest

import server.delivery.repository as repository
from tests.server.ws_kit import seeded_database

pytestmark = pytest.mark.postgres


def _subtrees(plan: list[str], node: str) -> list[list[str]]:
    """The lines of each plan node named ``node`` with every line indented under it."""
    out = []
    for n, line in enumerate(plan):
        if re.search(rf"(^|->  ){node}\b", line.strip()):
            depth = len(line) - len(line.lstrip())
            tree = [line]
            for below in plan[n + 1 :]:
                if below.strip() and len(below) - len(below.lstrip()) <= depth:
                    break
                tree.append(below)
            out.append(tree)
    return out


async def test_the_generic_insert_plan_never_rescans_the_stored_sends_per_row(
    postgres_url: str,
) -> None:
    async with seeded_database(postgres_url) as (engine, _), engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET plan_cache_mode = force_generic_plan")
        await raw.execute(f"PREPARE vox_insert AS {repository._INSERT_PG.sql}")
        nulls = ", ".join(["NULL"] * len(repository._INSERT_PG.names))
        rows = await raw.fetch(f"EXPLAIN EXECUTE vox_insert({nulls})")
        plan = [str(row[0]) for row in rows]
        await raw.execute("DEALLOCATE vox_insert")
    loops = [
        tree
        for tree in _subtrees(plan, "Nested Loop")
        if any("CTE Scan on new_sends" in line for line in tree)
    ]
    assert not loops, "\n".join(plan)


async def test_the_insert_compares_each_queue_row_once_with_the_skipped_sends(
    postgres_url: str,
) -> None:
    """With real rows and the generic plan: no join filter removes rows (the old plan's
    nested loop removed 1,485 for 55 sends), and every send's payload and queue row is
    stored."""
    async with seeded_database(postgres_url) as (engine, seeded):
        sender, recipient, account = seeded.sender, seeded.recipient, seeded.account
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            n = 55
            ids = [f"{k:032x}" for k in range(n)]
            params = {
                "s0": ids,
                "s1": [sender] * n,
                "s2": ["alice"] * n,
                "s3": [1] * n,
                "s4": [f"c{k}" for k in range(n)],
                "s5": [1] * n,
                "s6": [2**62] * n,
                "p0": ids,
                "p1": [0] * n,
                "p2": [os.urandom(16) for _ in range(n)],
                "q0": [recipient] * n,
                "q1": ids,
                "q2": [0] * n,
                "q3": [2**62] * n,
                "q4": [16] * n,
                "q5": [account] * n,
            }
            args = [params[name] for name in repository._INSERT_PG.names]
            await raw.execute("SET plan_cache_mode = force_generic_plan")
            await raw.execute(f"PREPARE vox_insert AS {repository._INSERT_PG.sql}")
            # EXECUTE takes no bound parameters: the values as quoted literals (``%L``).
            types = await raw.fetchval(
                "SELECT parameter_types FROM pg_prepared_statements WHERE name = 'vox_insert'"
            )
            marks = ", ".join(f"CAST(${k + 1} AS {t})" for k, t in enumerate(types))
            execute = await raw.fetchval(
                f"SELECT format('EXECUTE vox_insert({', '.join(['%L'] * len(args))})', {marks})",
                *args,
            )
            await raw.execute("BEGIN")
            rows = await raw.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {execute}")
            plan = "\n".join(str(row[0]) for row in rows)
            stored = await raw.fetchval("SELECT count(*) FROM delivery_queue")
            payloads = await raw.fetchval("SELECT count(*) FROM delivery_payloads")
            await raw.execute("ROLLBACK")
    assert (stored, payloads) == (n, n)
    removed = [int(x) for x in re.findall(r"Rows Removed by Join Filter: (\d+)", plan)]
    assert sum(removed) == 0, plan

"""``server.db.raw.pg_statement``: ``:name`` parameters become ``$n``, and nothing inside a
literal, a quoted identifier, a dollar-quoted body or a comment is taken for one."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from server.db.raw import PgStatement, pg_statement
from server.delivery import repository


def test_names_are_numbered_in_order_of_first_appearance() -> None:
    sql = "SELECT :a, :b, :a FROM t WHERE x = ANY(CAST(:keys AS BIGINT[]))"
    assert pg_statement(sql) == PgStatement(
        "SELECT $1, $2, $1 FROM t WHERE x = ANY(CAST($3 AS BIGINT[]))", ("a", "b", "keys")
    )


def test_casts_and_existing_numbers_are_not_parameters() -> None:
    assert pg_statement("SELECT :x::int, $1::text, a::bigint") == PgStatement(
        "SELECT $1::int, $1::text, a::bigint", ("x",)
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 'at :noon' || :x", "SELECT 'at :noon' || $1"),
        ("SELECT 'it''s :late', :x", "SELECT 'it''s :late', $1"),
        ("SELECT E'a\\' :b', :x", "SELECT E'a\\' :b', $1"),
        ('SELECT "col:umn" FROM t WHERE a = :x', 'SELECT "col:umn" FROM t WHERE a = $1'),
        ("SELECT :x -- then :y\n, 1", "SELECT $1 -- then :y\n, 1"),
        ("SELECT /* :y */ :x", "SELECT /* :y */ $1"),
        ("DO $$ BEGIN PERFORM :y; END $$; SELECT :x", "DO $$ BEGIN PERFORM :y; END $$; SELECT $1"),
        ("SELECT $fn$ :y $fn$, :x", "SELECT $fn$ :y $fn$, $1"),
    ],
)
def test_nothing_inside_a_literal_identifier_body_or_comment_is_a_parameter(
    sql: str, expected: str
) -> None:
    assert pg_statement(sql) == PgStatement(expected, ("x",))


def _old_numbering(sql: str) -> PgStatement:
    """The rule before literals were skipped (every real statement has none)."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    return PgStatement(re.sub(r"(?<![:\w$]):(\w+)", number, sql), tuple(names))


def test_the_relays_statements_are_numbered_as_before() -> None:
    statements = [v for v in vars(repository).values() if isinstance(v, PgStatement)]
    assert len(statements) >= 5
    for statement in statements:
        # The $n text turned back into :names: both rules give the statement again.
        named = re.sub(r"\$(\d+)", _named(statement.names), statement.sql)
        assert pg_statement(named) == _old_numbering(named) == statement


def _named(names: tuple[str, ...]) -> Callable[[re.Match[str]], str]:
    return lambda match: f":{names[int(match.group(1)) - 1]}"

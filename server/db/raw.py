"""Statements straight to the database driver, inside a transaction SQLAlchemy (or the caller)
runs: SQLAlchemy's execution path (parameter processing, events, the result object) costs
several times a short statement itself, and the hot paths (the delivery writer, logins) run
many of them.

* SQLite: :func:`sqlite_cursor` / :func:`sqlite_rows` — the ``sqlite3`` connection under a
  synchronous SQLAlchemy ``Connection`` (named ``:params`` or positional ``?`` alike).
* PostgreSQL: :class:`PgStatement` (``$1``-numbered text made from ``:name`` text by
  :func:`pg_statement`) and :func:`pg_rows` — through asyncpg itself when the caller runs its
  transaction on the driver (:data:`DRIVER_TRANSACTION`), else as a driver-level statement in
  SQLAlchemy's transaction. Called from ``AsyncConnection.run_sync`` (a greenlet).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.util import await_

__all__ = [
    "DRIVER_TRANSACTION",
    "PgStatement",
    "pg_rows",
    "pg_statement",
    "sqlite_cursor",
    "sqlite_rows",
]

#: Execution option of a PostgreSQL connection whose transaction the caller runs on the driver
#: itself (``BEGIN``/``COMMIT`` sent to asyncpg, not through SQLAlchemy, which then knows of
#: no transaction: the group-commit writer): :func:`pg_rows` goes straight to asyncpg too.
DRIVER_TRANSACTION = "vox_driver_transaction"


def sqlite_cursor(conn: Connection) -> Any:
    """A cursor of the ``sqlite3`` connection inside the caller's transaction."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def sqlite_rows(conn: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
    """All rows of one statement (none for a plain DELETE or INSERT) run through ``sqlite3``
    in the caller's transaction."""
    cursor = sqlite_cursor(conn)
    try:
        return list(cursor.execute(sql, params).fetchall())
    finally:
        cursor.close()


class PgStatement(NamedTuple):
    """A PostgreSQL statement with numbered parameters (``$1``...) and their names in order."""

    sql: str
    names: tuple[str, ...]


#: What :func:`pg_statement` reads past without numbering anything inside: string literals
#: (``'...'`` with ``''`` inside, ``E'...'`` with backslash escapes), quoted identifiers,
#: dollar-quoted bodies (``$$...$$``, ``$fn$...$fn$``) and comments; else a ``:name`` not
#: preceded by ``:`` (a ``::type`` cast), a word character or ``$``.
_PG_TOKEN = re.compile(
    r"(?P<skip>(?<!\w)[Ee]'(?:[^'\\]|\\.|'')*'"
    r"|'(?:[^']|'')*'"
    r'|"(?:[^"]|"")*"'
    r"|(?P<tag>\$(?:[A-Za-z_]\w*)?\$)[\s\S]*?(?P=tag)"
    r"|--[^\n]*"
    r"|/\*[\s\S]*?\*/)"
    r"|(?<![:\w$]):(?P<name>\w+)"
)


def pg_statement(sql: str) -> PgStatement:
    """``sql`` with its ``:name`` parameters numbered ``$1``, ``$2``... (in order of first
    appearance; a name used twice keeps its number). Literals, quoted identifiers,
    dollar-quoted bodies and comments are left as they are (:data:`_PG_TOKEN`)."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        if match.group("skip") is not None:
            return match.group(0)
        return f"${names.setdefault(match.group('name'), len(names) + 1)}"

    return PgStatement(_PG_TOKEN.sub(number, sql), tuple(names))


def pg_rows(conn: Connection, statement: PgStatement, params: Mapping[str, Any]) -> list[Any]:
    """All rows of a PostgreSQL statement: through asyncpg (its prepared-statement cache; no
    SQLAlchemy per statement) when the caller runs the transaction on the driver
    (:data:`DRIVER_TRANSACTION`), else as a driver-level statement of SQLAlchemy's
    transaction."""
    args = [params[name] for name in statement.names]
    if conn.get_execution_options().get(DRIVER_TRANSACTION):
        driver: Any = conn.connection.driver_connection
        return list(await_(driver.fetch(statement.sql, *args)))
    return list(conn.exec_driver_sql(statement.sql, tuple(args)))
